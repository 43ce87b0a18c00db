"""Regression tests from a review of ``prepare criteo``'s line numbering: two inputs on which the error
or the output depended on where blocks fall."""

from __future__ import annotations

from pathlib import Path

import pytest

from terarec.data_pipeline import criteo
from terarec.data_pipeline.schema import DatasetError

# a good Criteo line of exactly 255 bytes: 1 + 8 + 7 + 25 * 8 + 39 tabs
LINE = "\t".join(["1", "12345678", "1234567", *[""] * 11, *["0000000a"] * 25, ""])


def test_the_line_is_255_bytes() -> None:
    assert len(LINE) == 255 and len(LINE.split("\t")) == 40


def test_a_file_of_cr_line_ends_does_not_depend_on_the_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "day_0"
    raw.write_bytes((LINE + "\r").encode() * 12)
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 257)
    criteo.prepare_criteo([str(raw)], str(tmp_path / "a"), eval_fraction=0.25, on_error="fail", progress=False)
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 256)  # every 256-byte read ends at its only CR
    schema = criteo.prepare_criteo([str(raw)], str(tmp_path / "b"), eval_fraction=0.25, on_error="fail", progress=False)
    assert schema.split_rows == {"train": 9, "eval": 3}


def test_fail_mode_names_the_first_bad_line_before_many_wrong_field_counts(tmp_path: Path) -> None:
    raw = tmp_path / "day_0"
    lines = [LINE, "2" + LINE[1:]] + ["a,b,c"] * 1010  # a bad value, then a block's worth of wrong field counts
    raw.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="day_0:2: label is not 0 or 1$"):
        criteo.prepare_criteo([str(raw)], str(tmp_path / "out"), on_error="fail", progress=False)
