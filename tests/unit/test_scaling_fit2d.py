"""The two-axis law L(N, D), bootstrap intervals, per-data-size fits, the compute-optimal frontier,
the data-limited verdict and the two-axis holdout test (terarec.launch.scaling_law2d)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ladder_result

from terarec.launch.scaling_fit import bootstrap_power_law
from terarec.launch.scaling_law2d import (
    bootstrap_law_2d,
    data_limit_verdict,
    fit_law_2d,
    holdout_test_2d,
    law_frontier,
    per_data_size_fits,
    points_frontier,
)
from terarec.launch.sweep import write_results

# A 4 x 4 grid: model sizes (training FLOPs/example) 1e6 .. 1e8, data sizes 1e5 .. 1e7 rows
GRID_N, GRID_D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 4), np.geomspace(1e5, 1e7, 4)))
E, A, ALPHA, B, BETA = 0.40, 3.2, 0.3, 0.9, 0.25  # loss 0.49 at the smallest corner, 0.42 at the largest
NOISE = 3e-4  # per-seed sd, the seed-to-seed spread of an eval logloss


def known_law(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return E + A * np.asarray(n, dtype=float) ** -ALPHA + B * np.asarray(d, dtype=float) ** -BETA


def noisy_runs(seed: int, seeds_per_point: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [known_law(n, d) + rng.normal(0.0, NOISE, seeds_per_point) for n, d in zip(GRID_N, GRID_D)]


def test_exact_points_give_back_the_law() -> None:
    fit = fit_law_2d(GRID_N, GRID_D, known_law(GRID_N, GRID_D))
    assert fit["fitted"] and fit["form"] == "E+A*N^-alpha+B*D^-beta" and not fit["weighted"]
    for name, value in (("E", E), ("A", A), ("alpha", ALPHA), ("B", B), ("beta", BETA)):
        assert fit[name] == pytest.approx(value, rel=1e-4), name
    assert fit["rmse"] < 1e-8 and fit["points"] == 16


def test_noisy_points_recover_the_floor_and_exponents() -> None:
    """20 noisy draws (3 seeds per point, weighted by their std): E within 0.004, alpha and beta
    within 10%, A within 35% and B within 20% (over 200 draws the worst were 0.0032, 10.0%, 8.4%,
    44%, 22%; over these 20: 0.0028, 6.2%, 5.7%, 25%, 13%)."""
    for seed in range(20):
        runs = noisy_runs(seed)
        std = np.array([r.std(ddof=1) for r in runs])
        fit = fit_law_2d(GRID_N, GRID_D, np.array([r.mean() for r in runs]), std)
        assert fit["fitted"] and fit["weighted"], seed
        assert fit["E"] == pytest.approx(E, abs=0.004), seed
        assert fit["alpha"] == pytest.approx(ALPHA, rel=0.10) and fit["beta"] == pytest.approx(BETA, rel=0.10), seed
        assert fit["A"] == pytest.approx(A, rel=0.35) and fit["B"] == pytest.approx(B, rel=0.20), seed
        assert fit["alpha_err"] is not None and 0 < fit["alpha_err"] < 0.1


def test_an_axis_without_effect_is_dropped_and_the_floor_is_identified() -> None:
    """Points from a law with no model term (A = 0) plus noise: the full fit can split the level between
    E and a near-constant A N^-alpha at will; the fit drops the flat term, says so, and recovers E and
    beta (20 draws: E within 0.004, beta within 15%). A law with a real model term is never reduced."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        runs = [E + B * d**-BETA + rng.normal(0.0, NOISE, 3) for d in GRID_D]
        std = np.array([r.std(ddof=1) for r in runs])
        fit = fit_law_2d(GRID_N, GRID_D, np.array([r.mean() for r in runs]), std)
        assert fit["fitted"], seed
        if "reduced" in fit:  # otherwise nnls already put A at 0: nothing to drop
            assert fit["reduced"].startswith("A = 0: the N term was flat") and fit["alpha_err"] is None, seed
        assert fit["A"] == 0.0 or fit["A_scaled"] * (1 - 100.0 ** -fit["alpha"]) < 5 * NOISE, seed
        assert fit["E"] == pytest.approx(E, abs=0.004) and fit["beta"] == pytest.approx(BETA, rel=0.15), seed
    for seed in range(5):
        runs = noisy_runs(seed)
        std = np.array([r.std(ddof=1) for r in runs])
        assert "reduced" not in fit_law_2d(GRID_N, GRID_D, np.array([r.mean() for r in runs]), std), seed


# the committed testbed sweep's grid: the Wukong ladder's training FLOPs/example x 3 data sizes
LADDER_N, LADDER_D = (
    a.ravel() for a in np.meshgrid([430848, 1267968, 3730000, 8883456, 23349504], [50000, 150000, 450000])
)


@pytest.mark.parametrize("a, alpha", [(3.0, 0.01), (1.0, 0.012), (5.0, 0.008)])
def test_a_slow_but_real_model_effect_is_never_dropped(a: float, alpha: float) -> None:
    """A large A with a small alpha moves the loss by 0.05-0.16 across the ladder although its term
    changes by only ~4% of its own value: the nested law cannot fit that, so the term stays."""
    rng = np.random.default_rng(0)
    u = LADDER_N / LADDER_N.min()
    truth = 0.3 + a * u**-alpha + 0.04 * (LADDER_D / LADDER_D.min()) ** -1.0
    runs = [t + rng.normal(0.0, 5e-4, 2) for t in truth]
    fit = fit_law_2d(LADDER_N, LADDER_D, np.array([r.mean() for r in runs]), np.array([r.std(ddof=1) for r in runs]))
    assert fit["fitted"] and "reduced" not in fit
    assert fit["rmse"] < 2e-3  # it follows the model effect instead of averaging it away


def test_a_reduced_law_leaves_the_verdict_to_the_points() -> None:
    """With the model term dropped, the law's gain from a larger model is 0 by construction: the
    verdict reads both gains from the points instead."""
    rng = np.random.default_rng(1)
    runs = [0.38 + 0.04 * (d / 5e4) ** -1.1 + rng.normal(0.0, 1e-3, 2) for d in LADDER_D]
    means, std = np.array([r.mean() for r in runs]), np.array([r.std(ddof=1) for r in runs])
    fit = fit_law_2d(LADDER_N, LADDER_D, means, std)
    if "reduced" in fit:
        verdict = data_limit_verdict(LADDER_N, LADDER_D, means, fit)
        assert verdict["source"] == "points" and verdict["gain_more_model"] != 0.0


def test_too_few_points_or_sizes_are_reported_not_fitted() -> None:
    on_two_models = GRID_N < 1e7  # 8 points over 2 model sizes: alpha cannot be told from A and E
    fit = fit_law_2d(GRID_N[on_two_models], GRID_D[on_two_models], known_law(GRID_N, GRID_D)[on_two_models])
    assert not fit["fitted"] and "2 model sizes" in fit["note"] and "E" not in fit
    five = fit_law_2d(GRID_N[:5], GRID_D[:5], known_law(GRID_N[:5], GRID_D[:5]))
    assert not five["fitted"] and "5 points" in five["note"]
    assert bootstrap_law_2d(GRID_N[:5], GRID_D[:5], [np.ones(1)] * 5)["converged"] == 0.0


def test_bootstrap_intervals_cover_the_true_exponents() -> None:
    """95% percentile intervals (100 resamples here, 200 in sweeps) over 20 noisy draws: alpha and beta
    were each covered in 20 of 20 when this was written; at least 17 of 20 is asked."""
    covered = {"alpha": 0, "beta": 0}
    for seed in range(20):
        runs = noisy_runs(100 + seed)
        intervals = bootstrap_law_2d(GRID_N, GRID_D, runs, np.array([r.std(ddof=1) for r in runs]), 100, seed)
        assert intervals["converged"] == 1.0 and intervals["resamples"] == 100
        for name, truth in (("alpha", ALPHA), ("beta", BETA)):
            low, high = intervals["params"][name]["low"], intervals["params"][name]["high"]
            assert low <= intervals["params"][name]["median"] <= high
            covered[name] += low <= truth <= high
    assert covered["alpha"] >= 17 and covered["beta"] >= 17


def test_power_law_bootstrap_covers_the_exponent_and_is_deterministic() -> None:
    """L(C) = 7 C^-0.2 + 0.40 on 9 computes x 3 seeds: the exponent's interval (50 resamples)
    covered 0.2 in 10 of 10 draws when this was written; at least 8 is asked. Same seed, same intervals."""
    x = np.geomspace(1e10, 1e14, 9)
    covered = 0
    for seed in range(10):
        rng = np.random.default_rng(1000 + seed)
        runs = [7.0 * c**-0.2 + 0.40 + rng.normal(0.0, NOISE, 3) for c in x]
        std = np.array([r.std(ddof=1) for r in runs])
        intervals = bootstrap_power_law(x, runs, std, resamples=50, seed=seed)
        assert intervals["converged"] > 0.9 and set(intervals["params"]) == {"a", "b", "c"}
        covered += intervals["params"]["b"]["low"] <= 0.2 <= intervals["params"]["b"]["high"]
        if seed == 0:
            assert bootstrap_power_law(x, runs, std, resamples=50, seed=0) == intervals
    assert covered >= 8


def test_per_data_size_fits_recover_each_sizes_curve() -> None:
    """At fixed D, with C = N D: L = (E + B D^-beta) + A D^alpha C^-alpha, a power law plus constant."""
    compute = GRID_N * GRID_D
    fits = per_data_size_fits(compute, GRID_D, known_law(GRID_N, GRID_D))
    assert [f["train_rows"] for f in fits] == pytest.approx(np.geomspace(1e5, 1e7, 4))
    for entry in fits:
        rows, fit = entry["train_rows"], entry["fit"]
        assert entry["points"] == 4 and fit["form"] == "a*C^-b+c"
        assert fit["b"] == pytest.approx(ALPHA, rel=1e-3) and fit["c"] == pytest.approx(E + B * rows**-BETA, abs=1e-5)
        assert fit["a"] == pytest.approx(A * rows**ALPHA, rel=1e-2)
    lone = per_data_size_fits(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 7.0]), np.array([0.5, 0.4, 0.3]))
    assert "fit" in lone[0] and "nothing to fit" in lone[1]["note"]


def test_points_frontier_keeps_the_lowest_loss_so_far() -> None:
    compute = np.array([4.0, 1.0, 2.0, 2.0, 8.0, 16.0])
    loss = np.array([0.45, 0.50, 0.47, 0.46, 0.455, 0.44])  # the 8.0 point does no better than the 4.0 one
    n, d = np.arange(6.0), np.arange(6.0) * 10
    frontier = points_frontier(compute, loss, n, d)
    assert [(f["compute"], f["loss"]) for f in frontier] == [(1.0, 0.50), (2.0, 0.46), (4.0, 0.45), (16.0, 0.44)]
    assert frontier[1]["N"] == 3.0 and frontier[1]["D"] == 30.0  # the better of the two at compute 2
    rounded = points_frontier(np.array([1.0, 2.0, 2.0 * (1 + 1e-12)]), np.array([0.5, 0.47, 0.46]))
    assert rounded == [{"compute": 1.0, "loss": 0.5}, {"compute": 2.0 * (1 + 1e-12), "loss": 0.46}]


def test_law_frontier_is_the_compute_optimal_split() -> None:
    """With alpha = beta and A = B the optimum splits compute evenly: N* = D* = sqrt(C / k); for the
    grid's law, no other split of the same compute does better (checked on 2001 splits)."""
    even = {"E": 0.4, "A": 2.0, "B": 2.0, "alpha": 0.3, "beta": 0.3, "A_scaled": 2.0, "B_scaled": 2.0}
    even.update(n_scale=1.0, d_scale=1.0)
    (point,) = law_frontier(even, np.array([6e12]), compute_per_nd=6.0, n_range=(1.0, 1e5), d_range=(1.0, 1e5))
    assert point["N"] == pytest.approx(1e6) and point["D"] == pytest.approx(1e6) and point["extrapolated"]
    assert point["loss"] == pytest.approx(0.4 + 4.0 * 1e6**-0.3)
    fit = fit_law_2d(GRID_N, GRID_D, known_law(GRID_N, GRID_D))
    for entry in law_frontier(fit, np.geomspace(1e11, 1e15, 5)):
        splits = np.geomspace(1e-3, 1e3, 2001) * entry["N"]
        assert entry["N"] * entry["D"] == pytest.approx(entry["compute"])
        assert entry["loss"] <= known_law(splits, entry["compute"] / splits).min() + 1e-9
    assert law_frontier({**even, "A": 0.0}, np.array([1e9])) == []  # no model term: no optimum


def test_two_axis_holdout_error_on_a_hand_checked_example() -> None:
    """Exact law points but the largest-compute one, moved up by 0.01: the fit on the other 15 is the
    law, so the prediction misses by exactly 0.01."""
    loss = known_law(GRID_N, GRID_D)
    corner = int(np.argmax(GRID_N * GRID_D))
    loss[corner] += 0.01
    holdout = holdout_test_2d(GRID_N, GRID_D, loss)
    truth = E + A * 1e8**-ALPHA + B * 1e7**-BETA
    assert holdout["points_fitted"] == 15 and len(holdout["held_out"]) == 1
    assert holdout["held_out"][0]["N"] == 1e8 and holdout["held_out"][0]["D"] == 1e7
    assert holdout["held_out"][0]["predicted"] == pytest.approx(truth, abs=1e-6)
    assert holdout["abs_error"] == pytest.approx(0.01, abs=1e-6)
    assert holdout["rel_error"] == pytest.approx(0.01 / (truth + 0.01), rel=1e-4)
    drop = (E + A * 1e6**-ALPHA + B * 1e5**-BETA) - (truth + 0.01)
    assert holdout["loss_drop"] == pytest.approx(drop) and holdout["error_vs_loss_drop"] == pytest.approx(0.01 / drop)
    two = holdout_test_2d(GRID_N, GRID_D, loss, held_out=2)
    assert two["points_fitted"] == 14 and [h["compute"] for h in two["held_out"]] == pytest.approx(
        [1e8 * 10**6.333, 1e15], rel=1e-3
    )
    assert "too few points" in holdout_test_2d(GRID_N[:6], GRID_D[:6], loss[:6])["note"]


def test_verdict_tells_a_data_limited_grid_from_a_model_limited_one() -> None:
    """Data-limited: the data term is large and falls steeply (B = 30, beta = 0.4); model-limited:
    the reverse. From the fit and, without one, from the points at the largest corner."""
    data_heavy = 0.40 + 0.5 * GRID_N**-0.2 + 30.0 * GRID_D**-0.4
    model_heavy = 0.40 + 30.0 * GRID_N**-0.4 + 0.5 * GRID_D**-0.2
    for loss, limited in ((data_heavy, True), (model_heavy, False)):
        fitted = data_limit_verdict(GRID_N, GRID_D, loss, fit_law_2d(GRID_N, GRID_D, loss))
        from_points = data_limit_verdict(GRID_N, GRID_D, loss)
        assert fitted["source"] == "fitted L(N, D)" and from_points["source"] == "points"
        for verdict in (fitted, from_points):
            assert verdict["data_limited"] is limited
            assert verdict["verdict"].startswith("data-limited" if limited else "not data-limited")
            assert "\n" not in verdict["verdict"]
    corner = 0.40 + 30.0 * 1e7**-0.4
    gain = corner - (0.40 + 30.0 * 2e7**-0.4)  # the data term's gain when the rows double
    fitted = data_limit_verdict(GRID_N, GRID_D, data_heavy, fit_law_2d(GRID_N, GRID_D, data_heavy))
    assert fitted["gain_more_data"] == pytest.approx(gain, rel=1e-3)
    alone = data_limit_verdict(GRID_N[:1], GRID_D[:1], data_heavy[:1])
    assert alone["data_limited"] is None and alone["verdict"].startswith("cannot tell")


def test_sweep_with_a_data_axis_writes_the_two_axis_fit(tmp_path: Path) -> None:
    """4 models x 4 data sizes x 2 seeds, rows carrying train_rows: fit.json keeps its per-axis fits
    (now with bootstrap intervals) and gains fit_2d (intervals, holdout), per_data_size, frontier and verdict."""
    rows = []
    for rung, (n, d) in enumerate(zip(GRID_N.astype(int), GRID_D.astype(int)), 1):
        for seed, offset in ((0, -NOISE), (1, NOISE)):
            row = ladder_result(rung, int(n), float(known_law(n, d)) + offset, int(d), seed=seed, train_rows=int(d))
            rows.append({**row, "point": f"flavor=ladder_{rung},max_train_rows={d}"})
    write_results(rows, tmp_path)
    summary = json.loads((tmp_path / "fit.json").read_text())
    assert summary["points"] == 16 and set(summary["fits"]) == {"train_compute", "params_dense"}
    assert summary["fits"]["train_compute"]["intervals"]["resamples"] == 200
    fit = summary["fit_2d"]
    assert (
        fit["fitted"]
        and fit["alpha"] == pytest.approx(ALPHA, rel=1e-3)
        and fit["beta"] == pytest.approx(BETA, rel=1e-3)
    )
    assert fit["axes"] == {"N": "train_flops_per_example", "D": "train_rows"}
    assert fit["intervals"]["converged"] > 0.9 and set(fit["intervals"]["params"]) == {"E", "A", "alpha", "B", "beta"}
    assert fit["holdout"]["points_fitted"] == 15 and fit["holdout"]["abs_error"] < 1e-3
    assert len(summary["per_data_size"]) == 4 and summary["frontier"]["points"][0]["compute"] == 1e11
    assert len(summary["frontier"]["law"]) == 9 and summary["verdict"] == summary["data_limit"]["verdict"]
    assert (tmp_path / "scaling.png").stat().st_size > 20_000  # three panels: compute, params, data sizes


def test_repeated_points_do_not_count_towards_the_points_a_2d_fit_needs() -> None:
    from terarec.launch.scaling_law2d import too_few_2d

    n, d = np.array([1e6, 4e6, 1.6e7, 1e6, 4e6]), np.array([1e5, 3e5, 9e5, 3e5, 9e5])
    assert too_few_2d(np.append(n, 1e6), np.append(d, 9e5)) is None  # 6 distinct points over 3 x 3 sizes
    note = too_few_2d(np.append(n, n[0]), np.append(d, d[0]))  # a bootstrap draw repeating point 0
    assert note is not None and "5 points (distinct N, D pairs) over 3 model sizes and 3 data sizes" in note


def test_a_data_size_whose_computes_share_a_gflop_step_gets_only_the_log10_curve() -> None:
    from terarec.launch.scaling_plots import log_per_data_size

    class Writer:
        def __init__(self) -> None:
            self.scalars: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, global_step: int) -> None:
            self.scalars.append((tag, value, global_step))

    computes = {100: (2e8, 4e8), 1000: (2e10, 4e10)}  # 0.2 and 0.4 GFLOP both round to step 0
    points = [
        {"train_rows": rows, "train_compute": c, "logloss_mean": 0.5 - i / 100}
        for rows, cs in computes.items()
        for i, c in enumerate(cs)
    ]
    writer = Writer()
    log_per_data_size(writer, points, "logloss")
    tags = [tag for tag, _, _ in writer.scalars]
    assert tags.count("scaling/logloss_vs_log10_train_compute_x1000/rows_100") == 2
    assert "scaling/logloss_vs_train_compute_gflop/rows_100" not in tags
    assert [s for t, _, s in writer.scalars if t == "scaling/logloss_vs_train_compute_gflop/rows_1000"] == [20, 40]
