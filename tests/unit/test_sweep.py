"""Sweep spec validation and the power-law fit (the training side is in tests/integration)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ladder_result

from terarec.cli import main
from terarec.configs.loader import ConfigError
from terarec.launch.sweep import SweepSpec, fit_power_law, holdout_test, point_name, write_results


def test_power_law_fit_recovers_exponent_scale_and_floor() -> None:
    x = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 3e7])
    fit = fit_power_law(x, 40.0 * x**-0.3 + 0.42)
    assert fit["form"] == "a*C^-b+c"
    assert (
        fit["a"] == pytest.approx(40.0, rel=1e-3)
        and fit["b"] == pytest.approx(0.3, rel=1e-3)
        and fit["c"] == pytest.approx(0.42, rel=1e-3)
    )
    assert fit["rmse"] < 1e-6 and fit["b_err"] < 1e-3
    pure = fit_power_law(x[:3], 2.5 * x[:3] ** -0.07)  # too few points for 3 parameters: the pure power law
    assert pure["form"] == "a*C^-b" and pure["a"] == pytest.approx(2.5) and pure["b"] == pytest.approx(0.07)
    assert "note" not in fit and "note" not in pure


@pytest.mark.parametrize("seed", range(20))
def test_power_law_fit_recovers_a_known_law_through_noise(seed: int) -> None:
    """Points drawn from L(C) = 7 C^-0.2 + 0.40 over 1e10 .. 1e14 FLOPs (loss 0.47 -> 0.41, a CTR-like
    range) plus Gaussian noise of sd 2e-4 (seed-to-seed spread of an eval logloss): the exponent is
    recovered within 5% and the floor within 0.0015 (over 200 seeds the worst were 4.1% and 0.0013)."""
    x = np.geomspace(1e10, 1e14, 9)
    y = 7.0 * x**-0.2 + 0.40 + np.random.default_rng(seed).normal(0.0, 2e-4, len(x))
    fit = fit_power_law(x, y)
    assert fit["form"] == "a*C^-b+c" and "note" not in fit
    assert fit["b"] == pytest.approx(0.2, rel=0.05) and fit["c"] == pytest.approx(0.40, abs=0.0015)
    assert fit["a"] == pytest.approx(7.0, rel=0.25) and fit["rmse"] < 4e-4


def test_holdout_predicts_the_largest_point_from_the_others() -> None:
    """On exact law points the fit without the largest point is the law itself, so the error is
    exactly what the largest point was moved by; relative to its loss and to the sweep's loss drop."""
    x = np.array([3e11, 1e10, 1e12, 3e10, 1e11, 3e12])  # order does not matter: the largest x is held out
    y = 7.0 * x**-0.2 + 0.40
    y[-1] += 0.01
    holdout = holdout_test(x, y)
    law = 7.0 * 3e12**-0.2 + 0.40
    assert holdout is not None and holdout["points_fitted"] == 5 and holdout["held_out_x"] == 3e12
    assert holdout["predicted"] == pytest.approx(law, abs=1e-6) and holdout["observed"] == pytest.approx(law + 0.01)
    assert holdout["abs_error"] == pytest.approx(0.01, abs=1e-6)
    assert holdout["rel_error"] == pytest.approx(0.01 / (law + 0.01), rel=1e-4)
    drop = (7.0 * 1e10**-0.2 + 0.40) - (law + 0.01)
    assert holdout["loss_drop"] == pytest.approx(drop) and holdout["error_vs_loss_drop"] == pytest.approx(0.01 / drop)
    pure = holdout_test(x[:3], 2.5 * x[:3] ** -0.07)  # 2 points left: the pure power law, exact
    assert pure is not None and pure["fit"]["form"] == "a*C^-b" and pure["abs_error"] < 1e-9
    assert holdout_test(x[:2], y[:2]) is None
    rising = holdout_test(x[:3], np.array([0.40, 0.39, 0.41]))  # loss rises to the largest point: no drop
    assert rising is not None and rising["loss_drop"] < 0 and rising["error_vs_loss_drop"] is None


def test_results_hold_training_compute_and_fits_hold_the_holdout_test(tmp_path: Path) -> None:
    """write_results on five points of a known law: train_compute = train FLOPs/example x samples,
    both axes fitted with their holdout test, the plot and the TensorBoard curves written."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    train_flops = [3_000_000, 9_000_000, 27_000_000, 81_000_000, 243_000_000]
    rows = [ladder_result(i, f, 7.0 * (f * 900_000) ** -0.2 + 0.40, 900_000) for i, f in enumerate(train_flops, 1)]
    rows[2]["train_flops_per_example"] = None  # trained before training FLOPs were recorded
    write_results(rows, tmp_path)
    table = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["train_compute"] for r in table] == [str(f * 900_000) for f in train_flops[:2]] + [""] + [
        str(f * 900_000) for f in train_flops[3:]
    ]
    fits = json.loads((tmp_path / "fit.json").read_text())["fits"]
    assert set(fits) == {"train_compute", "params_dense"}
    compute = fits["train_compute"]
    assert compute["b"] == pytest.approx(0.2, rel=1e-3) and "left out" in compute["note_points"]
    # 3 points left: the pure power law, fitted in log-log space, extrapolated to the largest point
    known = [7.0 * (f * 900_000) ** -0.2 + 0.40 for f in (3e6, 9e6, 81e6, 243e6)]
    slope, intercept = np.polyfit(np.log([2.7e12, 8.1e12, 7.29e13]), np.log(known[:3]), 1)
    predicted = float(np.exp(intercept) * 2.187e14**slope)
    assert compute["holdout"]["points_fitted"] == 3 and compute["holdout"]["fit"]["form"] == "a*C^-b"
    assert compute["holdout"]["predicted"] == pytest.approx(predicted, rel=1e-9)
    assert compute["holdout"]["abs_error"] == pytest.approx(abs(predicted - known[3]), rel=1e-6)
    assert fits["params_dense"]["holdout"]["points_fitted"] == 4 and (tmp_path / "scaling.png").stat().st_size > 10_000
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={SCALARS: 0}).Reload()
    assert [e.step for e in events.Scalars("scaling/logloss_vs_train_compute_gflop")] == [
        round(f * 900_000 / 1e9) for f in (3_000_000, 9_000_000, 81_000_000, 243_000_000)
    ]


def test_a_loss_that_does_not_fall_is_flagged_not_fitted() -> None:
    """The depth-ablation sweep (wukong_depth_ablation) on 1M synthetic rows: loss rises slightly with depth."""
    flops = np.array([333568, 497408, 825088, 1480448, 2791168])
    loss = np.array([0.39123, 0.39149, 0.39299, 0.39237, 0.39633])
    fit = fit_power_law(flops, loss)
    assert fit["b"] < 1e-3 and fit["loglog_slope"] > 0 and "does not fall" in fit["note"]


def test_a_step_onto_a_floor_is_flagged_at_the_exponent_bound() -> None:
    """One drop, then flat (the BST Taobao ladder's shape): b runs into its upper bound, and fit.json says so."""
    compute = np.array([1e9, 4e9, 1.6e10, 6.4e10])
    loss = np.array([0.3100, 0.3025, 0.3024, 0.3025])
    fit = fit_power_law(compute, loss)
    assert fit["b"] == pytest.approx(3.0, rel=1e-3) and "upper bound" in fit["note"]


def test_spec_expands_the_grid_and_checks_every_point(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\n  train.batch_size: [64, "
        "128]\noverrides: [train.max_steps=5]\n"
    )
    spec = SweepSpec.load(str(path), ["train.seed=3"])
    assert len(spec.points()) == 4 and spec.overrides == ["train.max_steps=5", "train.seed=3"]
    assert point_name(spec.points()[1]) == "num_layers=1,batch_size=128"
    path.write_text("base: wukong_synth\ngrid:\n  model.num_layer: [1, 2]\n")
    with pytest.raises(ConfigError, match="model.num_layer"):
        SweepSpec.load(str(path), [])


def test_bad_sweep_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base: wukong_synth\ngird: {}\n")
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error:") and "gird" in err and "\n" not in err


@pytest.mark.parametrize(
    "name",
    [
        "wukong_depth_ablation",
        "dcnv2_depth_ablation",
        "bst_depth_ablation",
        "wukong_depth_ablation_criteo1tb",
        "dcnv2_depth_ablation_criteo1tb",
        "bst_depth_ablation_taobao",
    ],
)
def test_shipped_depth_ablations_are_valid(name: str) -> None:
    spec = SweepSpec.load(name, [])
    assert len(spec.points()) >= 3 and list(spec.grid) == ["model.num_layers"]


@pytest.mark.parametrize("name", ["wukong_ladder", "wukong_ladder_criteo1tb", "dcnv2_ladder", "bst_ladder"])
def test_shipped_ladders_are_valid(name: str) -> None:
    """Ladders step through flavors (depth and width together); sizes are checked in test_scaling_ladders."""
    spec = SweepSpec.load(name, [])
    assert list(spec.grid) == ["model.flavor"] and len(spec.points()) >= 4


def test_scheduler_flag_needs_the_torchx_launcher(capsys: pytest.CaptureFixture[str]) -> None:
    from terarec.cli import main

    assert main(["sweep", "--config", "wukong_depth_ablation", "--scheduler", "slurm"]) == 2
    assert capsys.readouterr().err.strip() == "terarec: error: --scheduler needs --launcher torchx"
    assert main(["sweep", "--config", "wukong_depth_ablation", "--launcher", "torchx", "--scheduler", "pbs"]) == 2
    assert "--scheduler pbs: not a torchx scheduler (one of " in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("base: wukong_synth\ngrid: {model.num_layers: [1, 2]\n", "not valid YAML"),
        ("- base\n- grid\n", "top level must be a mapping of sweep keys"),
        (
            "base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\nnproc: abc\n",
            "'nproc' must be an integer >= 1, got 'abc'",
        ),
        ("base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\nnproc: 0\n", "'nproc' must be an integer >= 1, got 0"),
        ("base: wukong_synth\ngrid:\n  model.num_layers: 4\n", "grid key 'model.num_layers' must be a non-empty list"),
        ("base: wukong_synth\ngrid:\n  model.num_layers: []\n", "grid key 'model.num_layers' must be a non-empty list"),
        ("base: wukong_synth\ngrid:\n  model.num_layers: [1]\noverrides: x=1\n", "'overrides' must be a list"),
    ],
    ids=["malformed", "not-a-mapping", "nproc-abc", "nproc-0", "grid-scalar", "grid-empty", "overrides-string"],
)
def test_sweep_file_mistakes_are_one_line_naming_file_and_key(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        SweepSpec.load(str(path), [])
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"terarec: error: {path}: ") and expected in err and err.count("\n") == 1, err


def test_a_point_that_fails_with_a_user_error_is_that_error(tmp_path: Path) -> None:
    """The point's child (a real trainer process) finds the mistake: its one line, not 'exit 2, see the log'."""
    from terarec.errors import UserError
    from terarec.launch.sweep import run_point

    spec = SweepSpec("dcnv2_synth", {"train.seed": [1]}, [f"data.path={tmp_path / 'nope'}"])
    with pytest.raises(UserError) as err:
        run_point(spec, spec.points()[0], tmp_path / "point")
    assert str(err.value) == (
        f"sweep point seed=1: {tmp_path / 'nope' / 'schema.json'} not found: prepare the dataset first "
        f"(terarec prepare / terarec synth) (log: {tmp_path / 'point' / 'train.log'})"
    )


# -- re-runs: a point is reused only with the same config and dataset (issue "Trustworthy artifacts" 5) --


class FakeTrainer:
    """Stands in for a point's training process: records what the trainer records (the resolved
    config.yaml, metrics.json with the dataset fingerprint) and numbers unique to each training."""

    def __init__(self) -> None:
        self.trained: list[str] = []
        self.resumed: list[bool] = []

    def __call__(
        self,
        spec: SweepSpec,
        point: dict,
        run_dir: Path,
        launcher: str,
        scheduler: str,
        resume: bool = False,
        seed: int | None = None,
        threads: int | None = None,
    ) -> dict:
        from terarec.configs.loader import load_config, save_config
        from terarec.data_pipeline.manifest import dataset_fingerprint
        from terarec.launch.sweep import run_overrides

        cfg = load_config(spec.base, run_overrides(spec, point, run_dir, seed))
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        self.trained.append(point_name(point))
        self.resumed.append(resume)
        metrics = {
            "auc": 0.7,
            "logloss": 0.5 + len(self.trained) / 1000,  # a new training, a new number
            "params_dense": 10 * point["model.num_layers"],
            "flops_per_example": 100 * point["model.num_layers"],
            "dataset_fingerprint": dataset_fingerprint(cfg.data.path),
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics


@pytest.fixture
def fake_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTrainer, Path, Path]:
    """(trainer, sweep file, output dir): two points on a tiny synthetic dataset, already run once."""
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic
    from terarec.launch import sweep

    trainer = FakeTrainer()
    monkeypatch.setattr(sweep, "run_point", trainer)
    monkeypatch.setattr(sweep, "summarize", lambda rows, output: {})  # the fit is tested above
    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=1), tmp_path / "data", progress=False)
    path = tmp_path / "s.yaml"
    path.write_text(
        f"base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\noverrides: [data.path={tmp_path / 'data'}]\n"
    )
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 0
    assert trainer.trained == ["num_layers=1", "num_layers=2"]
    return trainer, path, out


def _results(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "results.csv").open()))


def test_sweep_with_other_data_stops_or_reruns(
    fake_sweep: tuple[FakeTrainer, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same data.path, re-prepared with other rows: the points' numbers are of the old data."""
    from terarec.data_pipeline.manifest import dataset_fingerprint
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    trainer, path, out = fake_sweep
    old = _results(out)
    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=2), tmp_path / "data", progress=False, overwrite=True)
    capsys.readouterr()
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error: 2 finished sweep point(s) in ") and err.count("\n") == 1
    assert f"2 finished sweep point(s) in {out / 'points'} were made with another config or dataset" in err
    assert "(num_layers=1, num_layers=2: dataset changed (fingerprint " in err
    assert len(trainer.trained) == 2 and _results(out) == old  # nothing ran, nothing was rewritten
    assert main(["sweep", "--config", str(path), "--output", str(out), "--on-change", "rerun"]) == 0
    assert trainer.trained[2:] == ["num_layers=1", "num_layers=2"]
    new = _results(out)
    assert [r["dataset_fingerprint"] for r in new] == [dataset_fingerprint(tmp_path / "data")] * 2
    assert [float(r["logloss"]) for r in new] == [0.503, 0.504]  # the re-run's numbers, not the old ones
    stale = sorted(p.name.split(".stale-")[0] for p in (out / "points").glob("*.stale-*"))
    assert stale == ["num_layers=1", "num_layers=2"] and len(list(out.glob("results.csv.stale-*"))) == 1


def test_sweep_with_changed_overrides_stops_or_reruns(
    fake_sweep: tuple[FakeTrainer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    trainer, path, out = fake_sweep
    capsys.readouterr()
    args = ["sweep", "--config", str(path), "--output", str(out), "train.max_steps=7"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "(num_layers=1, num_layers=2: config train.max_steps (0 -> 7)); nothing was run" in err
    assert len(trainer.trained) == 2 and err.count("\n") == 1
    assert main([*args, "--on-change", "rerun"]) == 0
    assert trainer.trained[2:] == ["num_layers=1", "num_layers=2"]
    assert [float(r["logloss"]) for r in _results(out)] == [0.503, 0.504]
    assert main(args) == 0 and len(trainer.trained) == 4  # now they are this request's points


def test_identical_sweep_rerun_skips_every_point(
    fake_sweep: tuple[FakeTrainer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    trainer, path, out = fake_sweep
    old = _results(out)
    capsys.readouterr()
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 0
    assert len(trainer.trained) == 2 and _results(out) == old
    assert capsys.readouterr().err.count("done earlier with the same config and data, skipped") == 2
    assert not list(out.rglob("*.stale-*"))
    # a new grid value beside finished points: only it trains
    path.write_text(path.read_text().replace("[1, 2]", "[1, 2, 3]"))
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 0
    assert trainer.trained[2:] == ["num_layers=3"] and len(_results(out)) == 3


def test_unfinished_points_continue_with_the_same_config_else_start_afresh(
    fake_sweep: tuple[FakeTrainer, Path, Path],
) -> None:
    """A crash left both points without metrics.json: num_layers=1 (same config) continues in place
    with resume=auto; num_layers=2, whose config.yaml says other settings, is moved aside first."""
    import yaml

    trainer, path, out = fake_sweep
    for name in ("num_layers=1", "num_layers=2"):
        (out / "points" / name / "metrics.json").unlink()
    saved = out / "points" / "num_layers=2" / "config.yaml"
    saved.write_text(saved.read_text().replace("lr: 0.001", "lr: 0.5"))
    assert yaml.safe_load(saved.read_text())["optim"]["lr"] == 0.5
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 0  # no finished point changed: no stop
    assert trainer.trained[2:] == ["num_layers=1", "num_layers=2"] and trainer.resumed[2:] == [True, False]
    (stale,) = (out / "points").glob("*.stale-*")
    assert stale.name.startswith("num_layers=2.stale-") and not (stale / "metrics.json").exists()
    assert [float(r["logloss"]) for r in _results(out)] == [0.503, 0.504]
