"""``prepare criteo`` on the real 10k Kaggle sample, malformed input in both modes, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from terarec.cli import main
from terarec.data_pipeline.criteo import decode_hex, prepare_criteo
from terarec.data_pipeline.schema import DatasetError, DatasetSchema

GOOD = "1\t5\t\t-1\t7\t0\t0\t0\t0\t0\t0\t0\t0\t0" + "\t0000000a" * 25 + "\t"
ROWS_OK = [GOOD, GOOD.replace("1\t5", "0\t6", 1)]


def test_round_trip_of_the_10k_sample(criteo_10k: Path, tmp_path: Path) -> None:
    schema = prepare_criteo([str(criteo_10k)], str(tmp_path), eval_fraction=0.2, progress=False)
    assert schema.split_rows == {"train": 8000, "eval": 2000} and schema.rejects == 0
    train, evaluation = pq.read_table(tmp_path / "train"), pq.read_table(tmp_path / "eval")
    assert int(train["label"].to_numpy().sum()) == 1728 and int(evaluation["label"].to_numpy().sum()) == 454
    first = train.slice(0, 1).to_pylist()[0]  # line 1: 0 1 1 5 0 1382 4 15 2 181 1 2 <empty> 2 68fd1e64 ...
    assert first["label"] == 0 and first["int_4"] == 1382 and first["int_11"] is None
    assert first["cat_0"] == 0x68FD1E64 and first["cat_21"] == 0  # empty categorical -> 0
    assert schema.sparse_feature("cat_0").cardinality == 175  # distinct C1 values (sort -u)
    assert DatasetSchema.load(tmp_path) == schema
    assert [n for n in train.column_names][:3] == ["label", "int_0", "int_1"]
    assert pq.ParquetFile(next((tmp_path / "train").glob("*.parquet"))).schema_arrow.field("cat_0").type == "uint32"


def test_decode_hex_flags_bad_values() -> None:
    import pyarrow as pa

    ids, bad = decode_hex(pa.array(["0000000f", "", "xyz00000", "ffffffff", "abc", None]))
    assert ids.tolist()[:4] == [15, 0, 0, 2**32 - 1] and bad.tolist() == [False, False, True, False, True, False]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("1\t2\t3", "expected 40 tab-separated fields, got 3"),
        (GOOD.replace("\t5\t", "\tfive\t", 1), "int_0 is not an integer"),
        (GOOD.replace("0000000a", "zz00000a", 1), "cat_0 is not 8 hex digits"),
    ],
)
def test_malformed_rows_fail_naming_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    raw = _write(tmp_path / "day_0", [*ROWS_OK, bad_line, GOOD])
    with pytest.raises(DatasetError) as err:
        prepare_criteo([str(raw)], str(tmp_path / "out"), progress=False)
    assert str(err.value) == f"{raw}:3: {reason}"


def test_malformed_rows_skipped_are_written_and_counted(tmp_path: Path) -> None:
    lines = [GOOD, "1\t2\t3", GOOD, GOOD.replace("\t5\t", "\t5.5\t", 1), GOOD, GOOD.replace("0000000a", "0000000g", 1)]
    raw = _write(tmp_path / "day_1", lines)
    schema = prepare_criteo([str(raw)], str(tmp_path / "out"), on_error="skip", progress=False)
    assert schema.rejects == 3 and schema.split_rows == {"train": 3, "eval": 0}
    rejects = (tmp_path / "out" / "rejects" / "day_1.tsv").read_text().splitlines()
    assert [r.split("\t")[:2] for r in rejects[1:]] == [
        ["2", "wrong field count"],
        ["4", "int_0 is not an integer"],
        ["6", "cat_0 is not 8 hex digits"],
    ]


def test_cli_exit_code_and_resume_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _write(tmp_path / "day_0", ROWS_OK), _write(tmp_path / "day_1.txt", [GOOD, "oops"])
    out = tmp_path / "out"
    # the same options on both runs: a finished dataset with other options is refused (test_dataset_manifest.py)
    prepare = ["prepare", "criteo", "--input", str(a), str(b), "--output", str(out), "--eval-fraction", "0.25"]
    assert main([*prepare, "--workers", "1"]) == 2
    assert f"{b}:2:" in capsys.readouterr().err
    assert (out / ".done" / "day_0.json").is_file() and not (out / ".done" / "day_1_txt.json").exists()
    _write(b, [GOOD, GOOD])
    before = (out / "train" / "part-day_0-00000.parquet").stat().st_mtime_ns
    assert main(prepare) == 0
    assert "1 of 2 files already done" in capsys.readouterr().out
    assert (out / "train" / "part-day_0-00000.parquet").stat().st_mtime_ns == before
    assert DatasetSchema.load(out).split_rows == {"train": 3, "eval": 1}
    assert not list(out.rglob("*.tmp"))


def test_eval_fraction_takes_the_last_rows_across_files(tmp_path: Path) -> None:
    files = [
        _write(tmp_path / f"day_{d}", [GOOD.replace("\t5\t", f"\t{d * 10 + i}\t", 1) for i in range(10)])
        for d in range(3)
    ]
    prepare_criteo([str(f) for f in files], str(tmp_path / "out"), eval_fraction=0.25, workers=2, progress=False)
    ev = np.sort(pq.read_table(tmp_path / "out" / "eval")["int_0"].to_numpy())
    assert ev.tolist() == list(range(22, 30))  # the last 8 of 30 rows, in time order
