"""``prepare criteo`` against a slow, obviously-correct per-row parse written in plain Python.

The columnar fast paths (hex ids as uint16 digit pairs, dense and label checks on raw bytes, row
groups buffered across CSV blocks) must write exactly the rows, values, rejects and reasons that
this reference derives line by line from the format's definition, on generated input covering the
edge cases: empty fields, all-empty rows, 0 / ffffffff / upper- and mixed-case hex, 18-digit and
negative integers, malformed values of every kind, a trailing tab, CRLF line ends, many CSV
blocks, row groups and part files.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.data_pipeline import criteo, sketch
from terarec.data_pipeline.criteo_fields import decode_hex, dense_is_integer
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES

HEX = re.compile(r"[0-9a-fA-F]{8}")
INTEGER = re.compile(r"-?[0-9]{1,18}")
COLUMNS = [LABEL, *DENSE_NAMES, *SPARSE_NAMES]


def reference_parse(line: str) -> tuple[dict[str, Any] | None, str]:
    """One raw line -> (output row, "") or (None, the first reason it is rejected)."""
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        return None, "wrong field count"
    if fields[0] not in ("0", "1"):
        return None, "label is not 0 or 1"
    row: dict[str, Any] = {LABEL: int(fields[0])}
    for name, value in zip(DENSE_NAMES, fields[1:14]):
        if value and not INTEGER.fullmatch(value):
            return None, f"{name} is not an integer"
        row[name] = int(value) if value else None
    for name, value in zip(SPARSE_NAMES, fields[14:]):
        if value and not HEX.fullmatch(value):
            return None, f"{name} is not 8 hex digits"
        row[name] = int(value, 16) if value else 0
    return row, ""


def _hex(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return ""
    if roll < 0.25:
        return rng.choice(["ffffffff", "FFFFFFFF", "00000000", "0000000f", "f0000000"])
    value = f"{rng.getrandbits(32 if roll < 0.6 else 8):08x}"
    return value.upper() if roll < 0.7 else "".join(rng.choice([c, c.upper()]) for c in value)


def _dense(rng: random.Random) -> str:
    choices = ["", "0", "-1", "999999999999999999", "-999999999999999999", str(rng.randint(-(10**6), 10**6))]
    return rng.choice(choices)


BREAKAGES = [  # (field index, bad value): every reason and the values the fast paths could get wrong
    (0, "2"),
    (0, ""),
    (0, "01"),
    (3, "1.5"),
    (3, "-"),
    (3, "--5"),
    (3, "5-"),
    (3, "1234567890123456789"),
    (3, " 7"),
    (20, "0000000g"),
    (20, "abc"),
    (20, "0x00000a"),
    (39, "123456789"),
    (39, "+0000001"),
]


def generate_lines(rows: int, seed: int) -> list[str]:
    """Raw lines: mostly good, all-empty rows, one broken field per malformed row, field-count errors."""
    rng = random.Random(seed)
    lines = []
    for i in range(rows):
        fields = [rng.choice("01")] + [_dense(rng) for _ in DENSE_NAMES] + [_hex(rng) for _ in SPARSE_NAMES]
        if i % 97 == 5:
            fields = [fields[0]] + [""] * (len(COLUMNS) - 1)  # everything missing but the label
        if i % 53 == 7:
            position, value = BREAKAGES[(i // 53) % len(BREAKAGES)]
            fields[position] = value
        line = "\t".join(fields)
        if i % 211 == 11:
            line += "\t"  # trailing tab: 41 fields
        if i % 307 == 13:
            line = "\t".join(fields[:20])
        lines.append(line)
    return lines


def _prepared_rows(directory: Path, split: str) -> list[dict[str, Any]]:
    parts = sorted((directory / split).glob("*.parquet"))
    return [row for part in parts for row in pq.read_table(part).to_pylist()]


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_prepare_writes_exactly_the_reference_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line_end: str
) -> None:
    lines = generate_lines(6000, seed=19)
    raw = tmp_path / "day_0"
    raw.write_bytes((line_end.join(lines) + line_end).encode())
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 64 << 10)  # ~40 CSV blocks
    monkeypatch.setattr(criteo, "ROW_GROUP_ROWS", 700)  # row groups straddle CSV blocks
    monkeypatch.setattr(criteo, "ROWS_PER_FILE", 2100)  # and several part files
    schema = criteo.prepare_criteo([str(raw)], str(tmp_path / "out"), on_error="skip", progress=False)

    parsed = [reference_parse(line) for line in lines]
    expected = [row for row, _ in parsed if row is not None]
    expected_rejects = [(str(i + 1), reason) for i, (row, reason) in enumerate(parsed) if row is None]
    assert 100 < len(expected_rejects) < 300 and schema.rejects == len(expected_rejects)
    assert schema.split_rows == {"train": len(expected), "eval": 0}
    assert _prepared_rows(tmp_path / "out", "train") == expected
    rejects = (tmp_path / "out" / "rejects" / "day_0.tsv").read_text().splitlines()[1:]
    assert [tuple(r.split("\t")[:2]) for r in rejects] == expected_rejects
    for part in sorted((tmp_path / "out" / "train").glob("*.parquet")):
        meta = pq.ParquetFile(part).metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert all(size == 700 for size in sizes[:-1]) and 0 < sizes[-1] <= 700
    for feature in schema.sparse:  # exact distinct counts (all below the sketch's exact limit)
        assert feature.cardinality == max(1, len({row[feature.name] for row in expected}))


def test_decode_hex_fast_and_general_paths_agree_with_python() -> None:
    rng = random.Random(3)
    values = [_hex(rng) for _ in range(5000)]
    ids, bad = decode_hex(pa.array(values))  # only empty and 8-digit values: the packed path
    assert not bad.any() and ids.tolist() == [int(v, 16) if v else 0 for v in values]
    values += ["0000000g", "12345", "ffffffff"]  # another length: the gather path
    ids, bad = decode_hex(pa.array(values).slice(1))  # and a sliced array (non-zero offset)
    assert ids.tolist() == [int(v, 16) if HEX.fullmatch(v) else 0 for v in values[1:]]
    assert bad.tolist() == [bool(v) and not HEX.fullmatch(v) for v in values[1:]]
    ids, bad = decode_hex(pa.array(["abc", "0000000a", "", "FFFFFFFF"]).slice(1))  # packed, odd byte offset
    assert ids.tolist() == [10, 0, 2**32 - 1] and not bad.any()
    ids, bad = decode_hex(pa.array(["0000000g", "", "ABCDEF12"]))  # packed path with a non-hex digit
    assert ids.tolist() == [0, 0, 0xABCDEF12] and bad.tolist() == [True, False, False]


def test_dense_check_matches_the_regex_on_random_strings() -> None:
    rng = np.random.default_rng(5)
    alphabet = list("0123456789-+. x")
    values = ["".join(rng.choice(alphabet, size=rng.integers(0, 21))) for _ in range(20000)]
    values += ["", "-", "0", "-0", "9" * 18, "9" * 19, "-" + "9" * 18, "-" + "9" * 19]
    expected = [v == "" or bool(INTEGER.fullmatch(v)) for v in values]
    assert dense_is_integer(pa.array(values)).tolist() == expected
    assert dense_is_integer(pa.array(values).slice(7)).tolist() == expected[7:]


def test_bytes_that_are_not_utf8_reject_the_row_naming_its_line(tmp_path: Path) -> None:
    """UTF-8 is not checked by the CSV reader (every field is checked byte by byte): such a row is
    a malformed row like any other, not a failure of the whole file."""
    good = "\t".join(["1"] + ["7"] * 13 + ["0000000a"] * 26)
    bad = good.replace("0000000a", "0000\xff00a", 1)
    raw = tmp_path / "day_0"
    raw.write_bytes("\n".join([good, bad, good]).encode("latin-1") + b"\n")
    with pytest.raises(criteo.DatasetError, match=f"^{raw}:2: cat_0 is not 8 hex digits$"):
        criteo.prepare_criteo([str(raw)], str(tmp_path / "fail"), progress=False)
    schema = criteo.prepare_criteo([str(raw)], str(tmp_path / "skip"), on_error="skip", progress=False)
    assert schema.rejects == 1 and schema.split_rows["train"] == 2
    rejects = (tmp_path / "skip" / "rejects" / "day_0.tsv").read_text().splitlines()
    assert rejects[1].split("\t")[:4] == ["2", "cat_0 is not 8 hex digits", "1", "7"] and "0000\ufffd00a" in rejects[1]


def test_row_group_buffer_holds_no_empty_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A split that gets no rows from a block must not keep that block's buffers (memory grew with
    the file when it did)."""
    monkeypatch.setattr(criteo, "ROW_GROUP_ROWS", 1000)
    lines = [line for line in generate_lines(400, seed=1) if line.count("\t") >= 39][:300]
    job = criteo.FileJob(str(tmp_path / "day_0"), "day_0", 1 << 62, str(tmp_path / "out"), "skip")
    converter = criteo._FileConverter(job)
    for start in range(0, 300, 100):  # three blocks, all rows to train, none to eval
        block = pa.RecordBatch.from_arrays(
            [pa.array(column) for column in zip(*(line.split("\t")[:40] for line in lines[start : start + 100]))],
            names=COLUMNS,
        )
        converter.add(block, np.arange(start + 1, start + 101))
    assert converter.pending["eval"] == [] and sum(t.num_rows for t in converter.pending["train"]) < 300


def test_large_vocabularies_are_written_without_dictionary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cat_0 has a new id on every row, cat_2 300 ids (above ``DICTIONARY_MAX_DISTINCT``, lowered here
    to 200): plain; the others (one id) and the label keep parquet's dictionary, the dense columns
    are delta-encoded. Label and ids are non-nullable (no definition levels). The rows are the reference's."""
    monkeypatch.setattr(criteo, "ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(criteo, "DICTIONARY_MAX_DISTINCT", 200)
    monkeypatch.setattr(sketch, "EXACT_LIMIT", 500)
    ids = [f"{i * 2654435761 % 2**32:08x}" for i in range(2500)]
    lines = [
        "\t".join(["1", str(i % 7)] + ["0"] * 12 + [ids[i], "0000000a", f"{i % 300:08x}"] + ["0000000a"] * 23)
        for i in range(2500)
    ]
    (tmp_path / "day_0").write_text("\n".join(lines) + "\n")
    criteo.prepare_criteo([str(tmp_path / "day_0")], str(tmp_path / "out"), progress=False)
    assert _prepared_rows(tmp_path / "out", "train") == [reference_parse(line)[0] for line in lines]
    meta = pq.ParquetFile(next((tmp_path / "out" / "train").glob("*.parquet"))).metadata
    names = meta.schema.to_arrow_schema().names
    encodings = {names[c]: meta.row_group(0).column(c).encodings for c in range(len(names))}
    dictionary = {name: "RLE_DICTIONARY" in found for name, found in encodings.items()}
    assert not dictionary["cat_0"] and not dictionary["cat_2"] and dictionary["cat_1"] and dictionary["label"]
    assert not dictionary["int_0"] and criteo.DENSE_ENCODING in encodings["int_0"]
    nullable = {f.name: f.nullable for f in meta.schema.to_arrow_schema()}
    assert not nullable["label"] and not nullable["cat_0"] and nullable["int_0"]
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [1000, 1000, 500]
