"""``schema.json``: what a prepared dataset holds (docs/architecture.md, "Directories on disk").

The schema is the one description of a dataset that the loader, the embedding-table builder and
the models read. Raw ids are stored unhashed; tables are sized from ``cardinality`` at train time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from terarec.errors import UserError

SCHEMA_FILE = "schema.json"
# attribute -> schema.json key where they differ (the file format predates the attribute's name)
_ON_DISK = {"split_rows": "rows"}
_IN_CODE = {disk: attr for attr, disk in _ON_DISK.items()}


class DatasetError(UserError, ValueError):
    """A prepared dataset or raw input is missing or malformed: the message names the file."""


@dataclass
class SparseFeature:
    """One categorical feature. ``multi_hot``: stored as ``list<uint32>``, else ``uint32``."""

    name: str
    cardinality: int  # ids are in [0, cardinality): observed max + 1 or the known vocabulary size
    multi_hot: bool = False


@dataclass
class SequenceFeature:
    """A history column (``list<uint32>``, oldest first) embedded with ``table``'s embeddings.

    ``table`` names the sparse feature whose table it shares (e.g. ``hist_item`` -> ``item``), so
    history and target items live in one embedding space, as BST does.
    """

    name: str
    table: str
    max_length: int


@dataclass
class DatasetSchema:
    dense: list[str]
    sparse: list[SparseFeature]
    sequence: list[SequenceFeature] = field(default_factory=list)
    label: str = "label"
    split_rows: dict[str, int] = field(default_factory=dict)  # split -> row count (schema.json: "rows")
    rejects: int = 0  # malformed input rows skipped (written to DIR/rejects/)
    source: str = ""
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def sparse_feature(self, name: str) -> SparseFeature:
        for feature in self.sparse:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def table_of(self, name: str) -> str | None:
        """The sparse feature whose embedding table a sequence feature uses."""
        return next((s.table for s in self.sequence if s.name == name), None)

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / SCHEMA_FILE
        tmp = path.with_suffix(".json.tmp")
        on_disk = {_ON_DISK.get(key, key): value for key, value in asdict(self).items()}
        tmp.write_text(json.dumps(on_disk, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, directory: str | Path, check_parts: bool = True) -> DatasetSchema:
        """Read schema.json; ``check_parts``: also check the parquet parts against the dataset's
        manifest (present, none extra, sizes, footer row counts), so nothing trains on a dataset
        with a lost, stray or damaged part."""
        path = Path(directory) / SCHEMA_FILE
        if not path.is_file():
            raise DatasetError(f"{path} not found: prepare the dataset first (terarec prepare / terarec synth)")
        try:
            raw = json.loads(path.read_text())
            schema = cls(
                dense=list(raw["dense"]),
                sparse=[SparseFeature(**s) for s in raw["sparse"]],
                sequence=[SequenceFeature(**s) for s in raw.get("sequence", [])],
                **{
                    _IN_CODE.get(k, k): raw[k]
                    for k in ("label", "rows", "rejects", "source", "command", "extra")
                    if k in raw
                },
            )
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise DatasetError(f"{path}: not a terarec schema ({err})") from None
        if check_parts:
            from terarec.data_pipeline.manifest import check_dataset  # manifest.py imports this module

            check_dataset(directory, schema)
        return schema


def dataset_files(directory: str | Path, split: str) -> list[Path]:
    """The split's parquet files, sorted (time order where the writer named them in order)."""
    files = sorted((Path(directory) / split).glob("part-*.parquet"))
    if not files:
        raise DatasetError(f"no parquet files in {Path(directory) / split}")
    return files
