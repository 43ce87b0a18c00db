"""Sweep seeds: validation, one run per (point, seed), per-point means/stds, the weighted fit, noisy points."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ladder_result

from terarec.cli import main
from terarec.configs.loader import ConfigError
from terarec.launch.scaling_fit import aggregate, fit_power_law, noisy_points
from terarec.launch.sweep import SweepSpec, write_results

BASE = {"base": "wukong_synth", "grid": {"model.num_layers": [1, 2]}}


def test_seeds_default_to_one_run_with_the_recipes_seed() -> None:
    spec = SweepSpec.parse(dict(BASE), "s.yaml", [])
    assert spec.seeds is None and spec.run_seeds() == [None]
    assert spec.point_overrides({"model.num_layers": 1}) == ["model.num_layers=1"]  # no train.seed: as before
    seeded = SweepSpec.parse({**BASE, "seeds": [0, 1, 2]}, "s.yaml", [])
    assert seeded.run_seeds() == [0, 1, 2]
    assert seeded.point_overrides({"model.num_layers": 1}, 2) == ["model.num_layers=1", "train.seed=2"]


@pytest.mark.parametrize(
    "seeds, extra, expected",
    [
        ([], [], "'seeds' must be a non-empty list of distinct integers >= 0, got []"),
        (3, [], "'seeds' must be a non-empty list of distinct integers >= 0, got 3"),
        ([0, 1, 1], [], "'seeds' must be a non-empty list of distinct integers >= 0, got [0, 1, 1]"),
        ([0, "1"], [], "got [0, '1']"),
        ([0, True], [], "got [0, True]"),
        ([-1], [], "got [-1]"),
        ([0, 1], ["train.seed=4"], "'seeds' and a train.seed override or grid key both set the seed"),
    ],
    ids=["empty", "scalar", "duplicate", "string", "bool", "negative", "also-overridden"],
)
def test_bad_seeds_are_one_line_naming_file_and_key(
    seeds: object, extra: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "seeds": seeds}))
    with pytest.raises(ConfigError, match=str(path)):
        SweepSpec.load(str(path), extra)
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"terarec: error: {path}: ") and expected in err and err.count("\n") == 1, err


def test_a_grid_over_train_seed_and_seeds_conflict() -> None:
    with pytest.raises(ConfigError, match="both set the seed"):
        SweepSpec.parse({"base": "wukong_synth", "grid": {"train.seed": [1, 2]}, "seeds": [0, 1]}, "s.yaml", [])


class SeededTrainer:
    """A point's training: loss 0.50 - 0.01 * layers, plus a seed-dependent offset (+-0.002 around
    it), recording the resolved config as the trainer does (so re-runs are reused)."""

    def __init__(self) -> None:
        self.trained: list[int | None] = []

    def __call__(self, spec, point, run_dir, launcher, scheduler, resume=False, seed=None, threads=None) -> dict:  # noqa: ANN001
        from terarec.configs.loader import load_config, save_config
        from terarec.data_pipeline.manifest import dataset_fingerprint
        from terarec.launch.sweep import run_overrides

        cfg = load_config(spec.base, run_overrides(spec, point, run_dir, seed))
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        self.trained.append(seed)
        layers = point["model.num_layers"]
        metrics = {
            "auc": 0.7,
            "logloss": 0.5 - 0.01 * layers + 0.002 * (cfg.train.seed - 1),
            "params_dense": 10 * layers,
            "flops_per_example": 100 * layers,
            "dataset_fingerprint": dataset_fingerprint(cfg.data.path),
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics


def test_each_point_trains_once_per_seed_and_points_csv_holds_mean_and_std(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic
    from terarec.launch import sweep

    trainer = SeededTrainer()
    monkeypatch.setattr(sweep, "run_point", trainer)
    monkeypatch.setattr(sweep, "summarize", lambda rows, output: {})
    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=1), tmp_path / "data", progress=False)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "seeds": [0, 1, 2], "overrides": [f"data.path={tmp_path / 'data'}"]}))
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 0
    assert trainer.trained == [0, 1, 2, 0, 1, 2]
    for name in ("num_layers=1", "num_layers=2"):
        for seed in (0, 1, 2):
            saved = yaml.safe_load((out / "points" / name / f"seed_{seed}" / "config.yaml").read_text())
            assert saved["train"]["seed"] == seed
    runs = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["point"], r["seed"]) for r in runs] == [(f"num_layers={n}", str(s)) for n in (1, 2) for s in (0, 1, 2)]
    points = list(csv.DictReader((out / "points.csv").open()))
    assert [(p["point"], p["seeds"]) for p in points] == [("num_layers=1", "3"), ("num_layers=2", "3")]
    assert [float(p["logloss_mean"]) for p in points] == pytest.approx([0.49, 0.48])
    assert [float(p["logloss_std"]) for p in points] == pytest.approx([0.002, 0.002])  # ddof 1 of -+0.002, 0
    assert main(["sweep", "--config", str(path), "--output", str(out)]) == 0
    assert len(trainer.trained) == 6  # every (point, seed) finished: all reused


def test_aggregate_means_and_sample_std_per_point() -> None:
    rows = [
        {"point": "p1", "seed": 0, "x": 1, "logloss": 0.40, "auc": 0.7},
        {"point": "p1", "seed": 1, "x": 1, "logloss": 0.42, "auc": 0.8},
        {"point": "p2", "seed": 0, "x": 2, "logloss": 0.30, "auc": 0.9},
    ]
    p1, p2 = aggregate(rows, ["x"])
    assert p1["seeds"] == 2 and p1["x"] == 1 and p1["logloss_mean"] == pytest.approx(0.41)
    assert p1["logloss_std"] == pytest.approx(np.sqrt(2) * 0.01) and p1["auc_std"] == pytest.approx(np.sqrt(2) * 0.05)
    assert p2["seeds"] == 1 and p2["logloss_mean"] == 0.30 and p2["logloss_std"] is None and p2["ne_mean"] is None


def test_weighted_fit_trusts_the_quiet_points() -> None:
    """Five exact points of 7 C^-0.2 + 0.40 and one moved by 0.02: with that point's std 100x the
    others' the weighted fit is the law (b within 1%), the unweighted one is pulled off it."""
    x = np.geomspace(1e10, 1e14, 6)
    y = 7.0 * x**-0.2 + 0.40
    y[2] += 0.02
    std = np.full(6, 1e-4)
    std[2] = 1e-2
    weighted, plain = fit_power_law(x, y, std), fit_power_law(x, y)
    assert weighted["weighted"] and not plain["weighted"]
    assert weighted["b"] == pytest.approx(0.2, rel=0.01) and weighted["c"] == pytest.approx(0.40, abs=5e-4)
    assert abs(plain["b"] - 0.2) > 0.02
    zero = std.copy()
    zero[0] = 0.0  # a point whose seeds agree exactly: no finite weight, so no weighting at all
    assert fit_power_law(x, y, zero)["weighted"] is False and fit_power_law(x, y, zero)["b"] == plain["b"]
    assert fit_power_law(x[:3], y[:3], std[:3])["form"] == "a*C^-b"  # the pure law takes the weights too
    pure = fit_power_law(x[:3], 2.5 * x[:3] ** -0.07 * np.array([1.0, 1.05, 1.0]), np.array([1e-4, 1.0, 1e-4]))
    assert pure["b"] == pytest.approx(0.07, rel=1e-3)  # the noisy middle point hardly counts


def test_noisy_points_are_within_their_neighbours_gap() -> None:
    points = [
        {"point": "a", "c": 1, "logloss_mean": 0.50, "logloss_std": 0.001},
        {"point": "b", "c": 2, "logloss_mean": 0.45, "logloss_std": 0.004},
        {"point": "c", "c": 3, "logloss_mean": 0.447, "logloss_std": 0.002},  # 0.003 above its neighbour
        {"point": "d", "c": 4, "logloss_mean": 0.40, "logloss_std": None},
    ]
    assert noisy_points(points, "c", "logloss") == [
        {"point": "b", "std": 0.004, "gap_to_neighbour": pytest.approx(0.003)},
    ]
    points[2]["logloss_std"] = 0.0035
    assert [p["point"] for p in noisy_points(points, "c", "logloss")] == ["b", "c"]


def test_summary_of_seeded_runs_fits_the_means_and_flags_noisy_points(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Five sizes x three seeds on 7 C^-0.2 + 0.40 with seed offsets -s, 0, +s: means on the law,
    so the weighted fit recovers it; the fourth size's spread exceeds its gap to the fifth."""
    flops = [3_000_000, 9_000_000, 27_000_000, 81_000_000, 243_000_000]
    spread = [1e-4, 1e-4, 1e-4, 0.02, 1e-4]
    rows = [
        ladder_result(i, f, 7.0 * (f * 900_000) ** -0.2 + 0.40 + (seed - 1) * s, 900_000, seed=seed)
        for i, (f, s) in enumerate(zip(flops, spread), 1)
        for seed in (0, 1, 2)
    ]
    write_results(rows, tmp_path)
    summary = json.loads((tmp_path / "fit.json").read_text())
    assert summary["points"] == 5 and summary["runs"] == 15
    compute = summary["fits"]["train_compute"]
    assert compute["weighted"] and compute["b"] == pytest.approx(0.2, rel=1e-3)
    assert [p["point"] for p in summary["noisy_points"]] == ["flavor=ladder_4"]
    assert summary["noisy_points"][0]["std"] == pytest.approx(0.02)
    assert "flavor=ladder_4: logloss std over seeds 0.02000 exceeds the gap" in caplog.text
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 15
    assert (tmp_path / "tb" / "hparams" / "flavor=ladder_1" / "seed_2").is_dir()


# -- --jobs: runs side by side, results in grid order, a failure stops new runs --


class SideBySideTrainer(SeededTrainer):
    """A SeededTrainer whose first two runs must overlap (a two-party barrier) and then take 0.3 s
    (later ones at once), recording each run's ``threads``; ``fail``: labels that fail at once."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.barrier, self.fail, self.threads, self.started = threading.Barrier(2), fail, set(), []

    def __call__(self, spec, point, run_dir, launcher, scheduler, resume=False, seed=None, threads=None) -> dict:  # noqa: ANN001
        from terarec.launch.sweep import SweepError

        label = f"{point['model.num_layers']}/{seed}"
        self.started.append(label)
        self.threads.add(threads)
        if len(self.started) <= 2:
            self.barrier.wait(timeout=10)  # BrokenBarrierError unless the first two runs overlap
        if label in self.fail:
            raise SweepError(f"sweep point {label} failed (exit 1); see its log")
        time.sleep(0.3 if len(self.started) <= 2 else 0.0)
        return super().__call__(spec, point, run_dir, launcher, scheduler, resume, seed)


def _seeded_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainer: SeededTrainer, layers: list[int]) -> Path:
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic
    from terarec.launch import sweep

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set, it would be kept as every run's threads
    monkeypatch.setattr(sweep, "run_point", trainer)
    monkeypatch.setattr(sweep, "summarize", lambda rows, output: {})
    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=1), tmp_path / "data", progress=False)
    path = tmp_path / "s.yaml"
    grid = {"base": "wukong_synth", "grid": {"model.num_layers": layers}, "seeds": [0, 1]}
    path.write_text(yaml.safe_dump({**grid, "overrides": [f"data.path={tmp_path / 'data'}"]}))
    return path


def test_jobs_train_runs_side_by_side_with_the_cores_split_and_results_in_grid_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = SideBySideTrainer()
    path = _seeded_sweep(tmp_path, monkeypatch, trainer, [1, 2])
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--output", str(out), "--jobs", "2"]) == 0
    assert sorted(trainer.started) == ["1/0", "1/1", "2/0", "2/1"]
    assert trainer.threads == {max(1, len(os.sched_getaffinity(0)) // 2)}  # cores / (jobs x nproc)
    runs = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["point"], r["seed"]) for r in runs] == [(f"num_layers={n}", str(s)) for n in (1, 2) for s in (0, 1)]
    assert [float(r["logloss"]) for r in runs] == pytest.approx([0.488, 0.490, 0.478, 0.480])


def test_a_failed_run_under_jobs_stops_new_runs_and_a_rerun_keeps_the_finished_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = SideBySideTrainer(fail=("1/0",))
    path = _seeded_sweep(tmp_path, monkeypatch, trainer, [1, 2])
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--output", str(out), "--jobs", "2"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "terarec: error: sweep point 1/0 failed (exit 1); see its log"
    assert sorted(trainer.started) == ["1/0", "1/1"]  # 1/1 was running: it finished; nothing new started
    assert not (out / "results.csv").exists()
    again = SeededTrainer()
    monkeypatch.setattr("terarec.launch.sweep.run_point", again)
    assert main(["sweep", "--config", str(path), "--output", str(out), "--jobs", "2"]) == 0
    assert sorted(again.trained) == [0, 0, 1]  # 1/1 was reused


def test_two_runs_failing_side_by_side_raise_the_first_and_log_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = SideBySideTrainer(fail=("1/0", "1/1"))
    path = _seeded_sweep(tmp_path, monkeypatch, trainer, [1, 2])
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out"), "--jobs", "2"]) == 1
    err = capsys.readouterr().err.splitlines()
    raised = err[-1].removeprefix("terarec: error: sweep point ").removesuffix(" failed (exit 1); see its log")
    other = "1/1" if raised == "1/0" else "1/0"
    assert raised in ("1/0", "1/1") and any(f"also failed: sweep point {other} failed" in line for line in err)
    assert sorted(trainer.started) == ["1/0", "1/1"]


def test_ctrl_c_under_jobs_starts_nothing_new_and_waits_for_the_running_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from terarec.launch import sweep

    trainer = SideBySideTrainer()
    path = _seeded_sweep(tmp_path, monkeypatch, trainer, [1, 2, 3])

    def interrupted(futures: object) -> object:
        deadline = time.monotonic() + 10
        while len(trainer.started) < 2 and time.monotonic() < deadline:  # the first two runs under way
            time.sleep(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "as_completed", interrupted)
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out"), "--jobs", "2"]) == 130
    assert capsys.readouterr().err.endswith("terarec: interrupted\n")
    assert sorted(trainer.started) == ["1/0", "1/1"] and sorted(trainer.trained) == [0, 1]  # both finished


def test_omp_num_threads_set_by_the_user_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = SideBySideTrainer()
    path = _seeded_sweep(tmp_path, monkeypatch, trainer, [1])
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out"), "--jobs", "2"]) == 0
    assert trainer.threads == {None}  # the child inherits OMP_NUM_THREADS=3


def test_jobs_below_one_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--config", "wukong_layers", "--output", str(tmp_path), "--jobs", "0"]) == 2
    assert capsys.readouterr().err == "terarec: error: --jobs must be >= 1, got 0\n"
