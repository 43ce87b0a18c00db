"""Dataset manifests: nothing silently reused, merged or half-read.

D is the Criteo 10k sample prepared with ``--eval-fraction 0.2`` in parts of 2,500 rows (train:
2500, 2500, 2500, 500). Each user mistake is one ``terarec: error:`` line and exit code 2.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from terarec.batch import real_rows
from terarec.cli import main
from terarec.data_pipeline import criteo
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.manifest import MANIFEST_FILE, DatasetManifest, dataset_fingerprint
from terarec.data_pipeline.schema import DatasetError, DatasetSchema

GOOD = "1\t5\t\t-1\t7\t0\t0\t0\t0\t0\t0\t0\t0\t0" + "\t0000000a" * 25 + "\t"
D_ROWS = {"train": 8000, "eval": 2000}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _prepare(raw: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "criteo", "--input", str(raw), "--output", str(out), *extra])


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line of stderr, without its ``terarec: error: `` prefix."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("terarec: error: "), err
    return err[0].removeprefix("terarec: error: ")


def _files(directory: Path) -> dict[str, int]:
    return {p.relative_to(directory).as_posix(): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def _loader_rows(directory: Path, split: str = "train") -> int:
    schema = DatasetSchema.load(directory)
    spec = LoaderSpec(str(directory), split, 1000, {f.name: 1000 for f in schema.sparse}, shuffle_buffer=0)
    return sum(int(real_rows(batch.labels).sum()) for batch in BatchLoader(spec, schema))


@pytest.fixture
def d(criteo_10k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.setattr(criteo, "ROWS_PER_FILE", 2500)
    out = tmp_path / "d"
    assert _prepare(criteo_10k, out, "--eval-fraction", "0.2") == 0
    capsys.readouterr()
    return out


# -- 3: a re-run into a directory that holds a dataset ---------------------------------------


def test_d_lists_every_part_with_rows_bytes_and_checksum(d: Path) -> None:
    manifest = DatasetManifest.load(d)
    assert manifest is not None and manifest.complete and manifest.kind == "criteo"
    assert [(p.path.split("/")[0], p.rows) for p in manifest.parts] == [
        ("eval", 2000),
        *[("train", rows) for rows in (2500, 2500, 2500, 500)],
    ]
    assert all(p.bytes == (d / p.path).stat().st_size and len(p.crc32) == 8 for p in manifest.parts)
    assert manifest.options["--eval-fraction"] == 0.2 and manifest.options["--on-error"] == "fail"
    assert manifest.inputs[0].size == 2422799 and manifest.rows() == D_ROWS
    assert (
        json.loads((d / MANIFEST_FILE).read_text())["fingerprint"] == manifest.fingerprint() == dataset_fingerprint(d)
    )
    manifest.verify(d, full=True)


def test_changed_eval_fraction_is_refused_naming_it(
    d: Path, criteo_10k: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(d)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.3") == 2
    assert _error_line(capsys) == (
        f"{d} was prepared differently: --eval-fraction was 0.2, now 0.3; use --overwrite to rebuild it"
    )
    assert _files(d) == before and DatasetSchema.load(d).split_rows == D_ROWS


def test_a_dataset_of_another_prepare_format_is_refused(
    d: Path, criteo_10k: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Format 3 writes the same rows in other parquet encodings: a format-2 directory is not reused as it."""
    assert criteo.FORMAT == 3
    monkeypatch.setattr(criteo, "FORMAT", 2)
    old = d.parent / "old"
    assert _prepare(criteo_10k, old, "--eval-fraction", "0.2") == 0
    monkeypatch.setattr(criteo, "FORMAT", 3)
    capsys.readouterr()
    before = _files(old)
    assert _prepare(criteo_10k, old, "--eval-fraction", "0.2") == 2
    assert _error_line(capsys) == (
        f"{old} was prepared differently: prepare format was 2, now 3; use --overwrite to rebuild it"
    )
    assert _files(old) == before


def test_valid_fraction_is_recorded_only_when_used_and_a_change_is_refused(
    d: Path, criteo_10k: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(DatasetManifest.load(d).options) == ["prepare format", "--eval-fraction", "--eval-files", "--on-error"]
    assert DatasetManifest.load(d).options["prepare format"] == criteo.FORMAT
    before = _files(d)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2", "--valid-fraction", "0.1") == 2
    assert _error_line(capsys) == (
        f"{d} was prepared differently: --valid-fraction was not set, now 0.1; use --overwrite to rebuild it"
    )
    assert _files(d) == before
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2", "--valid-fraction", "0.1", "--overwrite") == 0
    three = {"train": 7000, "valid": 1000, "eval": 2000}
    assert DatasetManifest.load(d).rows() == DatasetSchema.load(d).split_rows == three
    assert _loader_rows(d, "valid") == 1000
    capsys.readouterr()
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2", "--valid-fraction", "0.05") == 2
    assert "--valid-fraction was 0.1, now 0.05" in _error_line(capsys)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2") == 2
    assert "--valid-fraction was 0.1, now not set" in _error_line(capsys)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2", "--valid-fraction", "0.1") == 0  # same: nothing to do
    assert "nothing to do" in capsys.readouterr().out and DatasetSchema.load(d).split_rows == three


def test_changed_input_is_refused_not_merged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, out = _write(tmp_path / "day_0", [GOOD] * 40), tmp_path / "out"
    assert _prepare(raw, out) == 0
    _write(raw, [GOOD] * 120)  # the same file, grown
    assert _prepare(raw, out) == 2
    assert _error_line(capsys).endswith(
        f"input {raw.resolve()} changed: {len(GOOD) * 40 + 40} bytes when prepared, now {len(GOOD) * 120 + 120}; "
        "use --overwrite to rebuild it"
    )
    other = _write(tmp_path / "day_1", [GOOD] * 120)  # another file into the same directory
    assert _prepare(other, out) == 2
    assert f"inputs were {raw.resolve()}, now {other.resolve()}" in _error_line(capsys)
    assert DatasetSchema.load(out).split_rows == {"train": 40, "eval": 0} and _loader_rows(out) == 40


def test_synth_into_a_criteo_dir_is_refused(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _files(d)
    assert main(["synth", "--rows", "1000", "--output", str(d)]) == 2
    assert _error_line(capsys) == f"{d} holds a criteo dataset, not synth; use --overwrite to replace it"
    assert _files(d) == before


def test_same_inputs_and_options_resume_what_is_missing(
    d: Path, criteo_10k: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, fingerprint = _files(d), dataset_fingerprint(d)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2") == 0
    assert "already prepared from these inputs and options; nothing to do" in capsys.readouterr().out
    assert _files(d) == before
    (d / "train" / "part-train_10k_tsv-00001.parquet").unlink()
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2") == 0
    assert "part-train_10k_tsv-00001.parquet is missing" in capsys.readouterr().out
    assert dataset_fingerprint(d) == fingerprint and _loader_rows(d) == 8000  # rebuilt, byte for byte
    parts = {name: mtime for name, mtime in _files(d).items() if name.endswith(".parquet")}
    stray = d / "train" / "part-train_10k_tsv-00009.parquet"
    shutil.copy(d / "train" / "part-train_10k_tsv-00000.parquet", stray)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2") == 0
    assert "1 of 1 files already done" in capsys.readouterr().out and not stray.exists()
    assert {name: mtime for name, mtime in _files(d).items() if name.endswith(".parquet")} == parts
    assert dataset_fingerprint(d) == fingerprint


def test_overwrite_swaps_only_when_complete(
    d: Path, criteo_10k: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before, fingerprint = _files(d), dataset_fingerprint(d)
    convert, calls = criteo.convert_lines, []  # the sample's blocks are all good rows: this path

    def fail_on_the_third_block(buffer, size):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return convert(buffer, size)

    monkeypatch.setattr(criteo, "BLOCK_BYTES", 256 << 10)  # ~10 blocks
    monkeypatch.setattr(criteo, "convert_lines", fail_on_the_third_block)
    with pytest.raises(RuntimeError, match="disk full"):
        _prepare(criteo_10k, d, "--eval-fraction", "0.3", "--overwrite")
    assert _files(d) == before and dataset_fingerprint(d) == fingerprint and DatasetSchema.load(d).split_rows == D_ROWS
    assert sorted(p.name for p in d.parent.iterdir()) == ["d"]  # the half-built copy is gone
    monkeypatch.setattr(criteo, "convert_lines", convert)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.3", "--overwrite") == 0
    assert DatasetSchema.load(d).split_rows == {"train": 7000, "eval": 3000} and dataset_fingerprint(d) != fingerprint
    assert sorted(p.name for p in d.parent.iterdir()) == ["d"]
    assert main(["synth", "--rows", "1000", "--output", str(d), "--overwrite"]) == 0  # another kind, replaced whole
    assert DatasetManifest.load(d).kind == "synth" and not list((d / "train").glob("part-train_10k*"))


def test_an_interrupted_resume_leaves_a_dataset_that_does_not_load(
    d: Path, criteo_10k: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (d / "eval" / "part-train_10k_tsv-00000.parquet").unlink()

    def crash(buffer, size):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(criteo, "convert_lines", crash)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2") == 130  # the CLI's "interrupted"
    with pytest.raises(DatasetError, match="the build did not finish"):
        DatasetSchema.load(d)
    monkeypatch.undo()
    monkeypatch.setattr(criteo, "ROWS_PER_FILE", 2500)
    assert _prepare(criteo_10k, d, "--eval-fraction", "0.2") == 0
    assert DatasetSchema.load(d).split_rows == D_ROWS


def test_a_non_empty_directory_without_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["synth", "--rows", "500", "--output", str(out)]) == 2
    assert _error_line(capsys).startswith(f"{out} is not empty and has no manifest.json")
    assert main(["synth", "--rows", "500", "--output", str(out), "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and DatasetSchema.load(out).split_rows == {"train": 450, "eval": 50}


def test_sequence_datasets_are_claimed_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _write(
        tmp_path / "ub.csv",
        [f"{u},{u * 10 + k},5,{'buy' if k == 2 else 'pv'},{1511544070 + k}" for u in (1, 2) for k in range(4)],
    )
    out = tmp_path / "seq"
    prepare = ["prepare", "taobao", "--input", str(raw), "--output", str(out), "--eval-fraction", "0"]
    assert main(prepare) == 0 and DatasetManifest.load(out).kind == "taobao"
    assert main([*prepare, "--max-history", "3"]) == 2
    assert (
        _error_line(capsys)
        == f"{out} was prepared differently: --max-history was 50, now 3; use --overwrite to rebuild it"
    )
    assert main([*prepare, "--max-history", "3", "--overwrite"]) == 0
    assert DatasetManifest.load(out).options["--max-history"] == 3
    assert DatasetSchema.load(out).split_rows == {"train": 8}


# -- 6: parts that went missing, appeared or were damaged after prepare ------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["deleted", "extra", "truncated", "footer"])
def test_a_missing_extra_or_damaged_part_is_one_line_naming_it(d: Path, damage: str) -> None:
    part = d / "train" / "part-train_10k_tsv-00001.parquet"
    size = part.stat().st_size
    if damage == "deleted":
        part.unlink()
        expected = f"{part} is missing: the dataset lists it (2500 rows); re-run the prepare command"
    elif damage == "extra":
        part = d / "train" / "part-train_10k_tsv-00009.parquet"
        shutil.copy(d / "train" / "part-train_10k_tsv-00000.parquet", part)
        expected = f"{part} is not part of the dataset (manifest.json does not list it): remove it"
    elif damage == "truncated":
        _truncate(part)
        expected = f"{part} is damaged or was replaced: {size // 2} bytes, the manifest says {size}"
    else:
        with open(part, "r+b") as fh:  # the same size, an unreadable footer
            fh.seek(size - 8)
            fh.write(b"\0" * 8)
        expected = f"{part} is damaged: cannot read its parquet footer ("
    with pytest.raises(DatasetError) as err:
        DatasetSchema.load(d)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_train_refuses_a_dataset_with_a_deleted_part(
    d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On main, training ran on 5,500 of the 8,000 train rows without a word."""
    part = d / "train" / "part-train_10k_tsv-00001.parquet"
    part.unlink()
    assert main(["train", "--config", "dcnv2_criteo10k", f"data.path={d}", f"run.dir={tmp_path / 'run'}"]) == 2
    assert _error_line(capsys).startswith(f"{part} is missing")
    assert not (tmp_path / "run").exists()


def test_a_damaged_page_is_found_by_full_verify_and_named_by_the_loader(d: Path) -> None:
    part = d / "train" / "part-train_10k_tsv-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 2000] = bytes(2000)  # same size, footer intact
    part.write_bytes(bytes(data))
    DatasetSchema.load(d)  # the per-load checks (sizes, footers) cannot see inside pages
    with pytest.raises(DatasetError, match=rf"^{part} is damaged: crc32 [0-9a-f]{{8}}, the manifest says"):
        DatasetManifest.load(d).verify(d, full=True)
    with pytest.raises(DatasetError, match=rf"^{part} is damaged: row group 0 is unreadable"):
        _loader_rows(d)


def test_a_dataset_without_manifest_loads_with_a_warning_and_damage_is_named(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (d / MANIFEST_FILE).unlink()  # as prepared before manifests
    assert _loader_rows(d) == 8000
    assert "has no manifest.json (prepared before manifests)" in capsys.readouterr().err
    part = d / "train" / "part-train_10k_tsv-00002.parquet"
    _truncate(part)
    with pytest.raises(DatasetError, match=rf"^{part} is damaged: cannot read its parquet footer"):
        _loader_rows(d)


def test_an_edited_manifest_is_refused(d: Path) -> None:
    record = json.loads((d / MANIFEST_FILE).read_text())
    record["parts"][1]["rows"] = 2400
    (d / MANIFEST_FILE).write_text(json.dumps(record))
    with pytest.raises(DatasetError, match="was edited or damaged"):
        DatasetSchema.load(d)


def test_fingerprint_is_content_based(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert main(["synth", "--rows", "800", "--seed", str(seed), "--output", str(tmp_path / name)]) == 0
    prints = [dataset_fingerprint(tmp_path / name) for name in "abc"]
    assert prints[0] == prints[1] != prints[2] and len(prints[0]) == 32


# -- 7 and unreadable input: one line, never a traceback ---------------------------------------


def test_a_comma_separated_file_fails_at_its_first_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On main: 0 rows, "rejects 100", exit 0."""
    raw = _write(tmp_path / "day_0.csv", [GOOD.replace("\t", ",")] * 100)
    assert _prepare(raw, tmp_path / "out") == 2
    assert _error_line(capsys) == f"{raw}:1: expected 40 tab-separated fields, got 1"
    assert _prepare(raw, tmp_path / "skip", "--on-error", "skip") == 2
    assert _error_line(capsys) == (
        f"{raw} has no valid rows: all 100 rows are malformed (is it tab-separated Criteo data?)"
    )


def test_fail_mode_stops_in_blocks_of_only_malformed_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(criteo, "BLOCK_BYTES", 4096)  # ~17 rows a block: the comma rows fill whole blocks
    csv_blocks: list[int] = []
    real_add = criteo.add_csv_block
    monkeypatch.setattr(criteo, "add_csv_block", lambda *a, **k: csv_blocks.append(1) or real_add(*a, **k))
    raw = _write(tmp_path / "day_0", [GOOD.replace("\t", ",")] * 500 + [GOOD] * 60)
    assert _prepare(raw, tmp_path / "out", "--workers", "1") == 2
    assert _error_line(capsys) == f"{raw}:1: expected 40 tab-separated fields, got 1"
    assert len(csv_blocks) == 1  # stopped after the first block (no row to check in it), not after ~30 of them


def _truncated_gzip() -> bytes:
    data = gzip.compress(("\n".join([GOOD] * 3000) + "\n").encode())
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("day_0", b"", "input file '{path}' is empty"),
        ("day_0.gz", b"", "input file '{path}' is empty"),
        ("day_0.gz", (GOOD + "\n").encode(), "{path} is not gzip-compressed (plain text named .gz?)"),
        ("day_0.gz", _truncated_gzip(), "{path}: a truncated or damaged gzip file ("),
    ],
    ids=["empty", "empty-gz", "not-gzip", "truncated-gz"],
)
@pytest.mark.parametrize("split", [[], ["--eval-fraction", "0.2"]], ids=["no-split", "eval-fraction"])
def test_unreadable_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str, split: list[str]
) -> None:
    raw = tmp_path / name
    raw.write_bytes(content)
    assert _prepare(raw, tmp_path / "out", *split) == 2
    assert _error_line(capsys).startswith(message.format(path=raw))
