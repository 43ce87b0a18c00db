"""``synth --format tsv``: Criteo-1TB day files that ``prepare criteo`` reads back as the rows synth drew."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.cli import main
from terarec.data_pipeline import synth_tsv
from terarec.data_pipeline.criteo import prepare_criteo
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.synth import SynthSpec, calibrate_bias, label_model, make_chunk, pilot_sample
from terarec.data_pipeline.synth_tsv import hex_ids, write_tsv_days


def _generated(spec: SynthSpec, chunk_rows: int) -> pa.Table:
    """The rows synth draws for ``spec`` in chunks of ``chunk_rows``, as one table."""
    pilot = pilot_sample(spec)
    model = label_model(spec, pilot)
    bias = calibrate_bias(spec, model, pilot)
    chunks = [
        make_chunk(spec, c, min(chunk_rows, spec.rows - c * chunk_rows), bias, model)[0]
        for c in range((spec.rows + chunk_rows - 1) // chunk_rows)
    ]
    return pa.concat_tables(chunks)


def test_prepare_reads_back_what_the_generator_drew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gzip day files -> prepare criteo (day_1 as eval) -> the same labels, dense (nulls included) and ids;
    chunks of 700 rows make a chunk straddle the day boundary."""
    monkeypatch.setattr(synth_tsv, "CHUNK_ROWS", 700)
    spec = SynthSpec(rows=2001, seed=7)
    record = write_tsv_days(spec, tmp_path / "raw", days=2, gzip=True, progress=False)
    assert [(f["name"], f["rows"]) for f in record["files"]] == [("day_0.gz", 1000), ("day_1.gz", 1001)]
    raw = tmp_path / "raw"
    schema = prepare_criteo(
        [str(raw / "day_0.gz")], str(tmp_path / "prep"), eval_files=[str(raw / "day_1.gz")], workers=1, progress=False
    )
    assert schema.split_rows == {"train": 1000, "eval": 1001} and schema.rejects == 0
    prepared = pa.concat_tables([pq.read_table(tmp_path / "prep" / s) for s in ("train", "eval")])
    drawn = _generated(spec, 700)
    assert prepared[LABEL].to_numpy().tolist() == drawn[LABEL].to_numpy().tolist()
    for name in DENSE_NAMES:
        assert prepared[name].to_pylist() == drawn[name].to_pylist()  # nulls stay nulls
    assert sum(prepared[n].null_count for n in DENSE_NAMES) > 0
    for name in SPARSE_NAMES:
        assert np.array_equal(prepared[name].to_numpy(), drawn[name].to_numpy())


def test_same_seed_same_bytes_and_gzip_holds_the_plain_text(tmp_path: Path) -> None:
    spec = SynthSpec(rows=900, seed=1)
    write_tsv_days(spec, tmp_path / "a", days=3, progress=False)
    write_tsv_days(spec, tmp_path / "b", days=3, progress=False)
    write_tsv_days(spec, tmp_path / "z", days=3, gzip=True, progress=False)
    write_tsv_days(SynthSpec(rows=900, seed=2), tmp_path / "c", days=3, progress=False)
    for day in range(3):
        text = (tmp_path / "a" / f"day_{day}").read_bytes()
        assert text == (tmp_path / "b" / f"day_{day}").read_bytes()
        assert text == gzip.decompress((tmp_path / "z" / f"day_{day}.gz").read_bytes())
        assert text != (tmp_path / "c" / f"day_{day}").read_bytes()
        lines = text.decode().splitlines()
        assert len(lines) == 300 and all(len(line.split("\t")) == 40 for line in lines)


def test_rows_split_in_time_order_and_a_missing_id_is_an_empty_field(tmp_path: Path) -> None:
    record = write_tsv_days(SynthSpec(rows=5), tmp_path, days=3, progress=False)
    assert [f["rows"] for f in record["files"]] == [1, 2, 2]
    assert hex_ids(np.array([0, 10, 2**32 - 1], np.uint32)).to_pylist() == [None, "0000000a", "ffffffff"]


def test_rerun_does_nothing_and_another_request_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", "--format", "tsv", "--rows", "50", "--days", "2", "--output", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "day_0").stat().st_mtime_ns
    out = capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "wrote" not in out  # nothing was written: no "wrote" line
    assert (tmp_path / "day_0").stat().st_mtime_ns == before
    assert main([*args[:-2], "--seed", "3", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_missing_or_resized_day_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", "--format", "tsv", "--rows", "60", "--days", "3", "--output", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    (tmp_path / "day_1").unlink()
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "wrote" not in captured.out and "nothing to do" not in captured.out
    assert captured.err.startswith("terarec: error:") and "day_1 is missing" in captured.err
    assert captured.err.count("\n") == 1
    (tmp_path / "day_1").write_text("1\n")  # there again, but not the bytes synth wrote
    assert main(args) == 2 and "day_1 is 2 bytes" in capsys.readouterr().err


def test_output_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["synth", "--format", "tsv", "--rows", "10", "--output", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error:") and "is a file" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "tsv", "--multi-hot"], "prepare multihot"),
        (["--format", "tsv", "--eval-fraction", "0.2"], "splits are chosen by `prepare criteo`"),
        (["--days", "2"], "--days and --gzip are for --format tsv"),
        (["--format", "tsv", "--days", "0"], "--days must be positive"),
        (["--format", "tsv", "--days", "20"], "--rows 10 is fewer than --days 20"),
        (["--format", "tsv", "--labels", "testbed"], "--labels testbed needs --format parquet"),
    ],
)
def test_misuse_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    assert main(["synth", "--rows", "10", "--output", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error:") and message in err and err.count("\n") == 1
