"""The CSV path of ``prepare criteo``: a block of raw lines that is not only good rows (see
``criteo_lines.convert_lines``) read by pyarrow's CSV reader into all-string columns, which
``criteo_fields.convert_block`` checks and decodes, naming each bad row by its line in the file.

Each such block gets its own reader, over the whole block. The reader numbers rows its own way (empty
lines skipped, not numbered; a lone CR a line end); ``criteo_lines.reader_lines`` maps its row numbers
to the lines of the file as ``raw_files.count_lines`` counts them, so rejects name the line a text
editor shows and the train / valid / eval cut falls where the counted lines put it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.criteo_lines import BOM, reader_lines

if TYPE_CHECKING:
    from terarec.data_pipeline.criteo import _FileConverter

RAW_COLUMNS = [LABEL, *DENSE_NAMES, *SPARSE_NAMES]
CSV_CONVERT = pacsv.ConvertOptions(  # every column as a non-null string: conversion is ours, per row
    column_types={c: pa.string() for c in RAW_COLUMNS},
    quoted_strings_can_be_null=False,
    strings_can_be_null=False,
    check_utf8=False,  # every field is validated byte by byte (ASCII digits / hex) anyway
)


def csv_read_options(block_bytes: int) -> pacsv.ReadOptions:
    """Named all-string columns in ``block_bytes`` blocks, one thread (files are the parallel unit)."""
    return pacsv.ReadOptions(column_names=RAW_COLUMNS, use_threads=False, block_size=block_bytes)


def csv_parse_options(invalid_row_handler: Any = None) -> pacsv.ParseOptions:
    """Tab-separated fields, no quoting (the raw logs have none); the handler sees wrong-field-count rows."""
    return pacsv.ParseOptions(
        delimiter="\t", quote_char=False, double_quote=False, invalid_row_handler=invalid_row_handler
    )


def add_csv_block(converter: _FileConverter, lines: np.ndarray, lines_before: int, first: bool) -> int:
    """``lines``: a block of whole lines, the file's lines ``lines_before + 1`` on, through the CSV reader
    into ``converter``; returns the block's line count. A reader drops a UTF-8 BOM at its start (``first``:
    the file's start): one at the start of a later block is kept by a newline before it (an empty line to
    the reader), as the file's reader keeps one in the middle of the file."""
    numbered, count = reader_lines(lines, first)
    text = pa.py_buffer(lines)
    if not first and bytes(lines[:3]) == BOM:
        text = pa.py_buffer(b"\n" + lines.tobytes())

    def line_of(rows: Any) -> Any:  # the reader's row numbers (1-based, int or array) -> their lines in the file
        return lines_before + numbered[rows - 1]

    invalid: list[int] = []  # this block's rows of the wrong field count, by the reader's row number
    good = 0
    for batch in _csv_reader(converter, pa.BufferReader(text), len(text), line_of, invalid):
        converter.add(batch, line_of(_row_numbers(np.arange(good, good + batch.num_rows), invalid)))
        good += batch.num_rows
    if converter.job.on_error == "fail" and converter.skipped:  # every row of the block checked: stop here,
        raise converter.malformed([s[:2] for s in converter.skipped[:1]])  # not after a file of such rows
    return count


def _row_numbers(good_index: np.ndarray, skipped_rows: list[int]) -> np.ndarray:
    """The reader's 1-based row numbers of its good (field-count-valid) rows ``good_index`` (0-based),
    the rows numbered ``skipped_rows`` being the others."""
    if not skipped_rows:  # the usual block: no per-row search in an empty array
        return good_index + 1
    skipped = np.asarray(sorted(skipped_rows), np.int64)
    before = skipped - 1 - np.arange(len(skipped))  # good rows before each skipped row
    return good_index + 1 + np.searchsorted(before, good_index, side="right")


def _csv_reader(
    converter: _FileConverter, stream: pa.NativeFile, size: int, line_of: Callable[[int], Any], numbers: list[int]
) -> Any:
    """All-string batches of the tab-separated rows of ``stream`` (``size`` bytes, one reader block); rows
    with the wrong field count go to ``converter.skipped`` (their line in the file: ``line_of`` the
    reader's row number) and their row numbers to ``numbers``."""

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # an exception raised here is swallowed by pyarrow: record the row, report after the block
        numbers.append(row.number)
        converter.skipped.append(
            (
                int(line_of(row.number)),
                f"expected {row.expected_columns} tab-separated fields, got {row.actual_columns}",
                row.text,
            )
        )
        return "skip"

    return pacsv.open_csv(
        stream,
        read_options=csv_read_options(max(size, 1)),
        parse_options=csv_parse_options(on_invalid),
        convert_options=CSV_CONVERT,
    )
