"""Writing parquet parts atomically (temp name + rename) with bounded row groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from terarec.data_pipeline.manifest import PartFile

ROW_GROUP_ROWS = 131072  # row groups of ~64-256k rows (docs/architecture.md); one shuffle-window unit


class PartWriter:
    """Writes ``DIR/part-{prefix}{index:05d}.parquet`` files of at most ``rows_per_file`` rows.

    Each part is written under a ``.tmp`` name and renamed when closed, so a crash never leaves a
    truncated ``part-*.parquet`` that a loader or a resumed run would trust. ``parts`` records each
    closed part for the dataset's manifest (paths relative to ``directory``'s parent, the dataset).
    """

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_file: int, prefix: str = "") -> None:
        self.directory = directory
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.prefix = prefix
        # pyarrow.parquet.ParquetWriter's keyword arguments for the parts opened from now on
        # (compression, use_dictionary, column_encoding, ...); a producer may set its own
        self.options: dict[str, Any] = {"compression": "snappy", "use_dictionary": True}
        self.index = 0
        self.rows_in_file = 0
        self.rows_total = 0
        self.parts: list[PartFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._writer = self._open()
            take = min(table.num_rows - offset, self.rows_per_file - self.rows_in_file)
            self._writer.write_table(table.slice(offset, take), row_group_size=ROW_GROUP_ROWS)
            self.rows_in_file += take
            self.rows_total += take
            offset += take
            if self.rows_in_file >= self.rows_per_file:
                self._close_file()

    def _open(self) -> pq.ParquetWriter:
        final = self.directory / f"part-{self.prefix}{self.index:05d}.parquet"
        self._tmp = final.with_suffix(".parquet.tmp")
        return pq.ParquetWriter(self._tmp, self.schema, **self.options)

    def _close_file(self) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        final = self._tmp.with_suffix("")
        self._tmp.replace(final)
        self.parts.append(PartFile.of(final, self.directory.parent, self.rows_in_file))
        self._writer, self._tmp = None, None
        self.index += 1
        self.rows_in_file = 0

    def close(self) -> None:
        if self._writer is not None:
            self._close_file()
