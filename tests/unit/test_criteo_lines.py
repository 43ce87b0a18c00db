"""The line path of ``prepare criteo`` (``criteo_lines.convert_lines``: blocks of good rows cut and decoded
without the CSV reader) against the CSV path and the plain-Python reference: the same rows, and every
kind of block it must not take handed to the CSV path."""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from terarec.data_pipeline import criteo, raw_files
from terarec.data_pipeline.criteo_fields import convert_block
from terarec.data_pipeline.criteo_lines import PAD, convert_lines, line_blocks
from tests.unit.test_criteo_parse_reference import COLUMNS, _hex, _prepared_rows, reference_parse

DENSE_VALUES = ["", "0", "-0", "-1", "007", "12345678", "-1234567", "99999999", "1000", "-10000"]


def good_line(rng: random.Random) -> str:
    dense = [rng.choice([*DENSE_VALUES, str(rng.randint(-(10**6), 10**6))]) for _ in range(13)]
    return "\t".join([rng.choice("01"), *dense, *(_hex(rng) for _ in range(26))])


def _block(lines: list[str]) -> tuple[np.ndarray, int]:
    data = ("".join(line + "\n" for line in lines)).encode("latin-1")
    return np.frombuffer(data + b"\0" * PAD, np.uint8).copy(), len(data)


def _csv_path(lines: list[str]) -> tuple[pa.Table, np.ndarray]:
    batch = pa.RecordBatch.from_arrays([pa.array(c) for c in zip(*(line.split("\t") for line in lines))], names=COLUMNS)
    table, bad, _, ids = convert_block(batch)
    assert not bad.any()
    return table, ids


def test_a_block_of_good_rows_converts_as_the_csv_path_does() -> None:
    rng = random.Random(7)
    lines = [good_line(rng) for _ in range(3000)] + ["0" + "\t" * 39, "1\t" + "\t".join(["-99"] * 13) + "\t" * 26]
    converted = convert_lines(*_block(lines))
    assert converted is not None
    table, ids = converted
    expected_table, expected_ids = _csv_path(lines)
    assert table.equals(expected_table) and np.array_equal(ids, expected_ids) and ids.dtype == np.uint32
    assert table.to_pylist() == [reference_parse(line)[0] for line in lines]


GOOD = "\t".join(["1", "5", "-3", *[""] * 11, "0000000a", *["DEADbeef"] * 25])


@pytest.mark.parametrize(
    "lines",
    [
        [GOOD, GOOD + "\t"],  # 41 fields
        [GOOD, "\t".join(GOOD.split("\t")[:39])],  # 39 fields
        [GOOD, "", GOOD],  # an empty line
        [GOOD + "\r", GOOD + "\r"],  # CRLF line ends
        [GOOD.replace("DEADbeef", "DEAD\0eef", 1)],  # a control byte in a field
        [GOOD.replace("1", "2", 1)],  # label
        [GOOD.replace("1", "", 1)],
        [GOOD.replace("\t5\t", "\t-\t", 1)],  # a minus alone
        [GOOD.replace("\t5\t", "\t5-\t", 1)],
        [GOOD.replace("\t5\t", "\t--5\t", 1)],
        [GOOD.replace("\t5\t", "\t1.5\t", 1)],
        [GOOD.replace("\t5\t", "\t 5\t", 1)],
        [GOOD.replace("\t5\t", "\t+5\t", 1)],
        [GOOD.replace("\t5\t", "\t123456789\t", 1)],  # 9 digits: longer than this path reads
        [GOOD.replace("\t5\t", "\t-12345678\t", 1)],
        [GOOD.replace("\t5\t", "\t5\xb0\t", 1)],  # a byte with the high bit set ("0" + 0x80)
        [GOOD.replace("0000000a", "0000000g", 1)],
        [GOOD.replace("0000000a", "000000a", 1)],
        [GOOD.replace("0000000a", "00000000a", 1)],
        [GOOD.replace("0000000a", "0000\xb00a", 1)],
    ],
)
def test_any_block_but_good_rows_goes_to_the_csv_path(lines: list[str]) -> None:
    assert convert_lines(*_block([GOOD] * 5)) is not None
    assert convert_lines(*_block([GOOD] * 5 + lines)) is None


def _lines_with_bad_ones(rows: int, seed: int) -> list[str]:
    """Good lines, with a malformed value or a wrong field count every few hundred lines."""
    rng = random.Random(seed)
    lines = [good_line(rng) for _ in range(rows)]
    for i in range(150, rows, 700):
        fields = lines[i].split("\t")
        fields[rng.randrange(40)] = rng.choice(["2", "x", "0000000g", "1.5", "123456789012"])
        lines[i] = "\t".join(fields)
    for i in range(400, rows, 1100):
        lines[i] = "\t".join(lines[i].split("\t")[:30])
    return lines


def _count_paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    taken = {"lines": 0, "csv": 0}

    def counted(buffer: np.ndarray, size: int) -> Any:
        converted = convert_lines(buffer, size)
        taken["lines" if converted is not None else "csv"] += 1
        return converted

    monkeypatch.setattr(criteo, "convert_lines", counted)
    return taken


@pytest.mark.parametrize("gzipped", [False, True])
def test_files_mixing_both_paths_write_the_reference_rows_and_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzipped: bool
) -> None:
    lines = _lines_with_bad_ones(6000, seed=3)
    data = "\n".join(lines).encode()  # no newline after the last line
    raw = tmp_path / ("day_0.gz" if gzipped else "day_0")
    raw.write_bytes(gzip.compress(data) if gzipped else data)
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 32 << 10)  # ~40 blocks, lines straddling reads
    monkeypatch.setattr(criteo, "ROW_GROUP_ROWS", 700)
    taken = _count_paths(monkeypatch)
    out = tmp_path / "out"
    schema = criteo.prepare_criteo([str(raw)], str(out), eval_fraction=0.25, on_error="skip", progress=False)
    assert taken["lines"] > 10 and taken["csv"] > 5
    parsed = [reference_parse(line) for line in lines]
    good = [(i + 1, row) for i, (row, _) in enumerate(parsed) if row is not None]
    eval_from = len(lines) - round(len(lines) * 0.25)  # eval: the last quarter of the physical lines
    assert _prepared_rows(tmp_path / "out", "train") == [row for line, row in good if line <= eval_from]
    assert _prepared_rows(tmp_path / "out", "eval") == [row for line, row in good if line > eval_from]
    expected_rejects = [(str(i + 1), reason) for i, (row, reason) in enumerate(parsed) if row is None]
    rejects = (tmp_path / "out" / "rejects" / "day_0.tsv").read_text().splitlines()[1:]
    assert [tuple(r.split("\t")[:2]) for r in rejects] == expected_rejects and schema.rejects == len(rejects)


def test_fail_mode_names_the_first_bad_line_after_blocks_of_good_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(4)
    lines = [good_line(rng) for _ in range(2000)]
    lines[1500] = lines[1500].replace("\t", "\t\t", 1)  # 41 fields
    (tmp_path / "day_0").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 16 << 10)
    with pytest.raises(criteo.DatasetError, match="day_0:1501: expected 40 tab-separated fields, got 41$"):
        criteo.prepare_criteo([str(tmp_path / "day_0")], str(tmp_path / "out"), progress=False)


def test_a_file_without_line_ends_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 4096)
    (tmp_path / "day_0").write_bytes(b"\x01" * 50_000)
    with pytest.raises(criteo.DatasetError, match=r"day_0: no line end in 2\d,\d{3} bytes; is it Criteo"):
        criteo.prepare_criteo([str(tmp_path / "day_0")], str(tmp_path / "out"), progress=False)


def _prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, block: int, name: str) -> tuple[Any, ...]:
    (tmp_path / "day_0").write_bytes(data)
    monkeypatch.setattr(criteo, "BLOCK_BYTES", block)
    out = tmp_path / name
    criteo.prepare_criteo([str(tmp_path / "day_0")], str(out), eval_fraction=0.4, on_error="skip", progress=False)
    rejects = [r.split("\t")[:2] for r in (out / "rejects" / "day_0.tsv").read_text().splitlines()[1:]]
    return _prepared_rows(out, "train"), _prepared_rows(out, "eval"), rejects


@pytest.mark.parametrize("oddity", ["empty line", "lone CR", "BOM", "CR line ends"])
def test_lines_are_numbered_as_one_reader_of_the_whole_file_numbers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, oddity: str
) -> None:
    """An empty line, a lone CR (a line end to the CSV reader) or a UTF-8 BOM (dropped only at the start of
    the file) in a CSV-path block: the lines, rejects and split of the blocks after it are those of one
    reader over the file (one block), not shifted by where the blocks fall; a file of CR line ends (no
    newline at all) is read in blocks cut at its CRs."""
    rng = random.Random(11)
    lines = [good_line(rng) for _ in range(100)]
    lines[60] = "\t".join(lines[60].split("\t")[:39])  # a wrong field count, numbered by the reader
    lines[62] = lines[62].replace("\t", "\tx", 1)  # a bad value, numbered by the good rows before it
    if oddity == "empty line":
        lines.insert(5, "")
    elif oddity == "lone CR":
        lines[5] = lines[5].replace("\t", "\r", 1)
    else:  # a BOM on the first line of a block that is not the first
        data = ("\n".join(lines) + "\n").encode()
        firsts, seen = [], 0
        for buffer, size in line_blocks("day_0", pa.BufferReader(data), 4096):
            firsts.append(seen)
            seen += int(np.count_nonzero(buffer[:size] == ord("\n")))
        lines[firsts[2]] = "\ufeff" + lines[firsts[2]]
    data = ("\r".join(lines) if oddity == "CR line ends" else "\n".join(lines) + "\n").encode()
    one_block = _prepared(tmp_path, monkeypatch, data, 1 << 20, "one")
    assert _prepared(tmp_path, monkeypatch, data, 4096, "blocks") == one_block


@pytest.mark.parametrize("block", [1 << 20, 4096])
def test_rows_and_rejects_are_numbered_by_their_line_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Empty lines, mixed LF / CRLF / lone-CR line ends and a BOM in the middle of the file: each reject
    names its line as ``bytes.splitlines`` counts lines (empty ones included), and eval is exactly the
    good rows of the last 40% of those lines (``count_lines``' count), whatever the block size."""
    rng = random.Random(23)
    lines = [good_line(rng) for _ in range(150)]
    lines[10] = lines[11] = lines[90] = ""
    lines[30] = "\t".join(lines[30].split("\t")[:39])  # a wrong field count
    lines[50] = lines[50].replace("\t", "\tx", 1)  # a bad dense value
    lines[70] = "\ufeff" + lines[70]  # a BOM not at the file's start: the label is not 0 or 1
    ends = [rng.choice(["\n", "\n", "\r\n", "\r"]) for _ in lines]
    data = "".join(line + end for line, end in zip(lines, ends)).encode()
    physical = [line.decode() for line in data.splitlines()]
    cut = len(physical) - round(len(physical) * 0.4)  # the last line of train
    parsed = [(number, *reference_parse(line)) for number, line in enumerate(physical, 1) if line]
    train, evaluation, rejects = _prepared(tmp_path, monkeypatch, data, block, "out")
    assert [int(line) for line, _ in rejects] == [number for number, row, _ in parsed if row is None] == [31, 51, 71]
    assert train == [row for number, row, _ in parsed if row is not None and number <= cut]
    assert evaluation == [row for number, row, _ in parsed if row is not None and number > cut]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_count_lines_ends_lines_as_the_reader_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """LF, CRLF (also split between two reads) and lone CR each end one line, empty lines count, and so does
    a last line without an end: ``bytes.splitlines``' count, on 500 random files read 1-7 bytes at a time."""
    rng = random.Random(4)
    path = tmp_path / f"day_0{suffix}"
    for _ in range(500):
        data = "".join(rng.choice(["ab", "", "\r", "\n", "\r\n", "x\ty"]) for _ in range(rng.randint(1, 30))).encode()
        if not data:
            continue
        path.write_bytes(gzip.compress(data) if suffix else data)
        monkeypatch.setattr(raw_files, "COUNT_CHUNK_BYTES", rng.randint(1, 7))
        assert raw_files.count_lines(str(path)) == len(data.splitlines()), data
