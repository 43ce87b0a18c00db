"""The committed testbed sweeps against issue 15's acceptance, from their committed numbers: the loss
falls with training compute from the smallest to the largest point, the fitted floor lies between the
dataset's Bayes logloss and the smallest model's loss, and the holdout error of the largest point is
below 20% of the loss drop across the ladder. Also: each README's table says what points.csv says, and
every point has both seeds.

- docs/sweeps/wukong_ladder_testbed_cosine: the ladder (ladder_0 .. ladder_5) at 450k rows, 4 seeds, the
  LR decayed over the run: the loss falls and the floor holds; the holdout misses (21.8% of the drop).
- docs/sweeps/wukong_ladder_testbed_replicate: the same with seeds 4-7 (--jobs 2), and in its pooled/ the 8
  seeds of both: the loss falls and the floor holds; the holdout misses (21.9%, pooled 22.9%).
- docs/sweeps/wukong_ladder_testbed_rows: the same ladder on 900k rows of a 1.2M-row testbed, seeds 8 and 9
  (decided before it ran): all three hold, the holdout at 17.9% of the drop.
- docs/sweeps/wukong_ladder_testbed: the ladder (ladder_1 .. ladder_5) x 3 data sizes with a constant
  LR: the law holds along data; along the ladder the seeds' spread hides the model (strict xfails)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

SWEEPS = Path(__file__).resolve().parents[2] / "docs" / "sweeps"
LADDER, LADDER_X_DATA = SWEEPS / "wukong_ladder_testbed_cosine", SWEEPS / "wukong_ladder_testbed"
REPLICATE = SWEEPS / "wukong_ladder_testbed_replicate"
POOLED = REPLICATE / "pooled"
ROWS = SWEEPS / "wukong_ladder_testbed_rows"
MISSING = [LADDER, REPLICATE, POOLED]  # the 450k-row ladders: the holdout misses the bar
LADDERS = [*MISSING, ROWS]  # one data size: the ladder alone


def _name(p: Any) -> str:
    """A test id: the sweep folder's path under docs/sweeps (a ``pytest.param`` passes its value here too)."""
    return str(Path(str(getattr(p, "values", [p])[0])).relative_to(SWEEPS))


ALL = pytest.mark.parametrize("sweep", [*LADDERS, LADDER_X_DATA], ids=_name)
HOLDOUT_SHARE = 0.2  # the bar: holdout error below 20% of the loss drop


def _csv(sweep: Path, name: str) -> list[dict[str, str]]:
    with open(sweep / name, newline="") as f:
        return list(csv.DictReader(f))


def _points(sweep: Path) -> list[dict[str, str]]:
    """points.csv ordered by training compute (smallest first)."""
    return sorted(_csv(sweep, "points.csv"), key=lambda p: float(p["train_compute"]))


def _fit_json(sweep: Path) -> dict[str, Any]:
    fit: dict[str, Any] = json.loads((sweep / "fit.json").read_text())
    return fit


def _bayes_logloss(sweep: Path) -> float:
    """The eval split's exact Bayes logloss, copied from the dataset's schema.json into dataset.json."""
    return float(json.loads((sweep / "dataset.json").read_text())["testbed"]["bayes_logloss"])


@ALL
def test_the_sweep_has_four_sizes_over_30x_compute_and_two_seeds_each(sweep: Path) -> None:
    points, runs = _points(sweep), _csv(sweep, "results.csv")
    flops = sorted({float(p["train_flops_per_example"]) for p in points})  # one per model size
    assert len(flops) >= 4 and flops[-1] / flops[0] >= 30
    assert all(int(p["seeds"]) >= 2 for p in points)
    seeds = {point["point"]: sorted(int(r["seed"]) for r in runs if r["point"] == point["point"]) for point in points}
    assert all(len(set(s)) == len(s) == int(p["seeds"]) for p, s in zip(points, seeds.values()))
    assert len({tuple(s) for s in seeds.values()}) == 1  # every point has the same seeds


def acceptance(sweep: Path) -> dict[str, bool]:
    """Issue 15's three conditions along the ladder at the largest data size, from the committed
    points.csv, fit.json (the ``L(C)`` fit: of that data size's column in ``per_data_size`` when the
    sweep has several) and dataset.json."""
    rows = max(float(p["train_rows"]) for p in _points(sweep))
    ladder = [p for p in _points(sweep) if float(p["train_rows"]) == rows]  # by compute: by model size
    smallest, largest = float(ladder[0]["logloss_mean"]), float(ladder[-1]["logloss_mean"])
    summary = _fit_json(sweep)
    if "per_data_size" in summary:
        entry = next(e for e in summary["per_data_size"] if e["train_rows"] == rows)
        fit, holdout = entry["fit"], entry["holdout"]
    else:
        fit = summary["fits"]["train_compute"]
        holdout = fit["holdout"]
    drop = smallest - largest
    assert holdout["held_out_x"] == pytest.approx(float(ladder[-1]["train_compute"]))
    assert holdout["observed"] == pytest.approx(largest)
    assert holdout["abs_error"] == pytest.approx(abs(holdout["predicted"] - holdout["observed"]))
    return {
        "falls": largest < smallest,
        "floor": fit["form"] == "a*C^-b+c" and "note" not in fit and _bayes_logloss(sweep) < fit["c"] < smallest,
        "holdout": drop > 0 and holdout["abs_error"] < HOLDOUT_SHARE * drop,
    }


def acceptance_across_data() -> dict[str, bool]:
    """The same three across the whole sweep (smallest to largest compute), from the two-axis law."""
    points, fit = _points(LADDER_X_DATA), _fit_json(LADDER_X_DATA)["fit_2d"]
    smallest, largest = float(points[0]["logloss_mean"]), float(points[-1]["logloss_mean"])
    holdout, drop = fit["holdout"], smallest - largest
    assert holdout["held_out"][-1]["observed"] == pytest.approx(largest)
    return {
        "falls": largest < smallest,
        "floor": fit["fitted"] and _bayes_logloss(LADDER_X_DATA) < fit["E"] < smallest,
        "holdout": drop > 0 and holdout["abs_error"] < HOLDOUT_SHARE * drop,
    }


def test_across_the_data_axis_the_law_holds_and_says_the_model_term_was_dropped() -> None:
    assert acceptance_across_data() == {"falls": True, "floor": True, "holdout": True}
    assert _fit_json(LADDER_X_DATA)["fit_2d"]["reduced"].startswith("A = 0")


@ALL
def test_readme_states_each_acceptance_condition_as_the_numbers_decide_it(sweep: Path) -> None:
    """The README's verdict lines (``- PASS|FAIL (falls|floor|holdout): ...``) say what the numbers say."""
    verdicts = dict(
        (m.group(2), m.group(1) == "PASS")
        for m in re.finditer(r"^- (PASS|FAIL) \((falls|floor|holdout)\):", (sweep / "README.md").read_text(), re.M)
    )
    assert verdicts == acceptance(sweep)


# Where the committed sweeps miss the bar (their READMEs). Strict: a sweep that met it would fail the test.
# The ladder x data sweep (constant LR): along the ladder its seeds' spread hides the model, no floor and no
# holdout. The cosine ladder: the law fitted on five rungs misses the sixth by 21.8% of the drop (bar 20%).
FLAT = pytest.mark.xfail(strict=True, reason="with a constant LR the ladder is flat within the seeds' spread")
MISSED = pytest.mark.xfail(strict=True, reason="the five-rung law misses ladder_5 by 21.8-22.9% of the drop")


@ALL
def test_eval_logloss_falls_from_the_smallest_to_the_largest_point(sweep: Path) -> None:
    assert acceptance(sweep)["falls"]


@pytest.mark.parametrize("sweep", [*LADDERS, pytest.param(LADDER_X_DATA, marks=FLAT)], ids=_name)
def test_fitted_floor_lies_between_bayes_and_the_smallest_models_loss(sweep: Path) -> None:
    assert acceptance(sweep)["floor"]


@pytest.mark.parametrize(
    "sweep",
    [*(pytest.param(s, marks=MISSED) for s in MISSING), ROWS, pytest.param(LADDER_X_DATA, marks=FLAT)],
    ids=_name,
)
def test_holdout_error_of_the_largest_point_is_below_a_fifth_of_the_loss_drop(sweep: Path) -> None:
    assert acceptance(sweep)["holdout"]


def _readme_rows(sweep: Path) -> dict[tuple[str, int], list[str]]:
    """The README's per-point table: (flavor, train rows) -> its cells (the rows that start with a
    flavor in the "## Results" section; other sections may tabulate side checks)."""
    section = (sweep / "README.md").read_text().split("\n## Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"ladder_\d+", cells[0]):
            rows[(cells[0], int(cells[1].replace(",", "")))] = cells
    return rows


@ALL
def test_readme_table_matches_points_csv(sweep: Path) -> None:
    """Columns: flavor, train rows, training GFLOP/example, train compute (TFLOP), logloss mean +- std,
    AUC mean, ..."""
    table = _readme_rows(sweep)
    points = _points(sweep)
    assert sorted(table) == sorted((p["model.flavor"], int(p["train_rows"])) for p in points)
    for point in points:
        cells = table[(point["model.flavor"], int(point["train_rows"]))]
        assert float(cells[2]) == pytest.approx(float(point["train_flops_per_example"]) / 1e9, rel=2e-3)
        assert float(cells[3]) == pytest.approx(float(point["train_compute"]) / 1e12, rel=5e-3)
        mean, std = (float(v) for v in cells[4].split("±"))
        assert mean == pytest.approx(float(point["logloss_mean"]), abs=5e-5)
        assert std == pytest.approx(float(point["logloss_std"]), abs=5e-5)
        assert float(cells[5]) == pytest.approx(float(point["auc_mean"]), abs=5e-5)


@pytest.mark.parametrize(
    "name",
    [
        "wukong_ladder_testbed",
        "wukong_ladder_testbed_cosine",
        "wukong_ladder_testbed_replicate",
        "wukong_ladder_testbed_rows",
        "bst_ladder_taobao",
    ],
)
def test_the_committed_sweeps_configs_load_with_two_seeds(name: str) -> None:
    """The sweeps behind the committed results: a flavor ladder, at least two seeds, one recipe for every
    rung (a sweep may set the LR schedule's shape for every rung; the optimizer, LR and batch size are the
    recipe's)."""
    from terarec.launch.sweep import SweepSpec

    spec = SweepSpec.load(name, [])
    assert list(spec.grid)[0] == "model.flavor" and len(spec.grid["model.flavor"]) >= 4
    assert len(spec.seeds) >= 2
    assert set(spec.grid) <= {"model.flavor", "data.max_train_rows"}
    schedule = ("optim.decay=", "optim.warmup_steps=")
    assert not any(o.startswith(("optim.", "train.batch_size")) and not o.startswith(schedule) for o in spec.overrides)


def test_the_pooled_sweep_is_both_ladder_sweeps_runs_and_only_those() -> None:
    """pooled/results.csv: every run of the first sweep and of its replication, unchanged, and nothing else."""
    keys = ("point", "seed", "logloss", "auc", "valid_logloss", "train_compute", "dataset_fingerprint")
    both = [tuple(r[k] for k in keys) for sweep in (LADDER, REPLICATE) for r in _csv(sweep, "results.csv")]
    pooled = [tuple(r[k] for k in keys) for r in _csv(POOLED, "results.csv")]
    assert sorted(pooled) == sorted(both) and len(set(both)) == len(both) == 48
