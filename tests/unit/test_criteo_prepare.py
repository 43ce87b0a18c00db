"""``prepare criteo`` on the real 10k Kaggle sample, malformed input in both modes, resume, the
train / valid / eval split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from terarec.cli import main
from terarec.data_pipeline.criteo import prepare_criteo
from terarec.data_pipeline.criteo_fields import decode_hex
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.data_pipeline.splits import split_lines

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


def _days(tmp_path: Path, count: int = 3) -> list[Path]:
    """``count`` files of 10 rows in time order; row ``k`` overall has ``int_0 == k``."""
    return [
        _write(tmp_path / f"day_{d}", [GOOD.replace("\t5\t", f"\t{d * 10 + i}\t", 1) for i in range(10)])
        for d in range(count)
    ]


def _int_0(directory: Path, split: str) -> list[int]:
    return pq.read_table(directory / split)["int_0"].to_numpy().tolist()


def test_valid_fraction_takes_the_rows_just_before_eval_across_files(tmp_path: Path) -> None:
    """30 rows: eval gets round(30 * 0.25) = 8 (Python rounds half to even), valid round(30 * 0.2) = 6."""
    paths = [str(f) for f in _days(tmp_path)]
    runs = [tmp_path / "out", tmp_path / "again"]
    for out in runs:
        schema = prepare_criteo(paths, str(out), eval_fraction=0.25, workers=2, progress=False, valid_fraction=0.2)
        assert schema.split_rows == {"train": 16, "valid": 6, "eval": 8}
    out = runs[0]
    assert sorted(_int_0(out, "train")) == list(range(16))
    assert sorted(_int_0(out, "valid")) == list(range(16, 22))  # straddles day_1 and day_2
    assert sorted(_int_0(out, "eval")) == list(range(22, 30))
    for split in ("train", "valid", "eval"):  # deterministic: the same rows in the same order
        assert pq.read_table(out / split).equals(pq.read_table(runs[1] / split))


def test_valid_fraction_with_eval_files_takes_the_last_train_rows(tmp_path: Path) -> None:
    day_0, day_1, day_2 = _days(tmp_path)
    schema = prepare_criteo(
        [str(day_0), str(day_1)], str(tmp_path / "out"), eval_files=[str(day_2)], progress=False, valid_fraction=0.25
    )
    assert schema.split_rows == {"train": 15, "valid": 5, "eval": 10}  # 5 = round(20 train-file rows * 0.25)
    assert _int_0(tmp_path / "out", "valid") == list(range(15, 20))
    assert _int_0(tmp_path / "out", "eval") == list(range(20, 30))


@pytest.mark.parametrize("valid, eval_", [("-0.1", "0.2"), ("0.8", "0.2"), ("1.0", None)])
def test_valid_fraction_out_of_range_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], valid: str, eval_: str | None
) -> None:
    (raw,) = _days(tmp_path, 1)
    split = ["--eval-fraction", eval_] if eval_ else []
    prepare = ["prepare", "criteo", "--input", str(raw), "--output", str(tmp_path / "out"), *split]
    assert main([*prepare, "--valid-fraction", valid]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"--valid-fraction must be in [0, 1 - eval fraction) = [0, {1 - float(eval_ or 0):g}), got {float(valid)}"
        in err[0]
    )
    assert not (tmp_path / "out").exists()


def test_the_10k_sample_in_three_splits(criteo_10k: Path, tmp_path: Path) -> None:
    """--eval-fraction 0.2 --valid-fraction 0.1: eval as without valid, valid the last 1000 rows of that train."""
    both = prepare_criteo(
        [str(criteo_10k)], str(tmp_path / "three"), eval_fraction=0.2, progress=False, valid_fraction=0.1
    )
    assert both.split_rows == {"train": 7000, "valid": 1000, "eval": 2000}
    prepare_criteo([str(criteo_10k)], str(tmp_path / "two"), eval_fraction=0.2, progress=False)
    two_train = pq.read_table(tmp_path / "two" / "train")
    assert pq.read_table(tmp_path / "three" / "train").equals(two_train.slice(0, 7000))
    assert pq.read_table(tmp_path / "three" / "valid").equals(two_train.slice(7000))
    assert pq.read_table(tmp_path / "three" / "eval").equals(pq.read_table(tmp_path / "two" / "eval"))


@pytest.mark.slow
def test_early_stopping_reads_the_prepared_valid_split(criteo_10k: Path, tmp_path: Path) -> None:
    import json

    data = tmp_path / "data"
    splits = ["--eval-fraction", "0.2", "--valid-fraction", "0.1"]
    assert main(["prepare", "criteo", "--input", str(criteo_10k), "--output", str(data), *splits]) == 0
    args = ["--config", "dcnv2_synth", f"data.path={data}", f"run.dir={tmp_path / 'run'}", "logging.progress=false"]
    overrides = ["logging.tensorboard=false", "train.batch_size=500", "train.eval_every=7", "train.early_stop=logloss"]
    assert main(["train", *args, *overrides]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    valid = metrics["early_stop"]["valid"]  # the valid/ split (1000 rows, 200 clicks), not carved from train
    assert (valid["count"], valid["positives"]) == (1000, 200) and metrics["early_stop"]["best_step"] in (7, 14)
    assert (metrics["eval_rows"], metrics["samples"], metrics["steps"]) == (2000, 7000, 14)  # 7000 / 500 per step


def test_split_lines_cut_globally_and_map_to_each_file() -> None:
    # 30 lines in files of 10, 12, 8: eval the last 8 (global lines 23-30), valid the 6 before (17-22)
    assert split_lines([10, 12, 8], eval_rows=8, valid_rows=6) == ([10, 6, 0], [10, 12, 0])
    assert split_lines([10, 10, 10], eval_rows=8, valid_rows=6) == ([10, 6, 0], [10, 10, 2])
    assert split_lines([5], eval_rows=0, valid_rows=0) == ([5], [5])


def test_negative_workers_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    day = _write(tmp_path / "day_0", ROWS_OK)
    args = ["prepare", "criteo", "--input", str(day), "--output", str(tmp_path / "o"), "--eval-fraction", "0.25"]
    assert main([*args, "--workers", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "terarec: error: --workers must be >= 0 (0: one per core), got -1\n"
    assert not (tmp_path / "o").exists()
