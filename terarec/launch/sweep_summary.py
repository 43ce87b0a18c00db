"""A finished sweep's runs -> points, fits, plots and TensorBoard curves (``terarec.launch.sweep``
runs them; what each fit and file holds is described there)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from terarec.launch.scaling_fit import (
    aggregate,
    bootstrap_power_law,
    fit_power_law,
    holdout_test,
    law_value,
    noisy_points,
    usable_sigma,
)
from terarec.launch.scaling_law2d import runs_short_of_their_rows, two_axis_summary
from terarec.launch.scaling_plots import data_sizes, draw_data_sizes, draw_prediction, log_per_data_size

log = logging.getLogger("terarec")

RESULT_KEYS = [
    "auc",
    "logloss",
    "ne",
    "params_dense",
    "params_sparse",
    "flops_per_example",
    "train_flops_per_example",
    "samples",
    "steps",
    "wall_s",
    "dataset_fingerprint",
    "train_rows",
    "valid_logloss",
    "valid_auc",
    "threads",
]
FIT_AXES = {"train_compute": "training compute (FLOPs)", "params_dense": "dense parameters"}
# TensorBoard curves: the fitted axes and forward FLOPs/example; x -> step divisor (GFLOP for compute,
# whose raw FLOPs overflow an int64 step at cluster scale)
CURVE_UNITS = {"train_compute": ("train_compute_gflop", 1e9), "params_dense": ("params_dense", 1.0)}
CURVE_UNITS["flops_per_example"] = ("flops_per_example", 1.0)
NO_COMPUTE = (
    "points without train_flops_per_example (trained before it was recorded) are left out of this axis: "
    "re-run them to include them"
)


def _log_hparams(writer: Any, rows: list[dict[str, Any]], seeded: bool) -> None:
    """One TensorBoard hparams entry per run (HPARAMS tab: the grid keys, seed, sizes and final
    metrics); ``seeded``: runs are named ``POINT/seed_S``."""
    for row in rows:
        params = {k: v for k, v in row.items() if k not in RESULT_KEYS and isinstance(v, (int, float, str, bool))}
        params.update({k: float(row[k]) for k in ("flops_per_example", "params_dense")})
        if row.get("train_rows"):
            params["train_rows"] = int(row["train_rows"])
        params["log10_flops_per_example"] = float(np.log10(float(row["flops_per_example"])))
        if row.get("train_compute"):
            params["log10_train_compute"] = float(np.log10(float(row["train_compute"])))
        metrics = {f"hparam/{k}": float(row[k]) for k in ("logloss", "auc", "ne") if row.get(k) is not None}
        name = f"{row['point']}/seed_{row['seed']}" if seeded and row.get("seed") is not None else row["point"]
        writer.add_hparams(params, metrics, run_name=f"hparams/{name}")


def _log_curves(writer: Any, points: list[dict[str, Any]], metric: str) -> None:
    """Scaling curves of the points' means: step = x (in the axis' unit) and step = 1000 * log10(x),
    steps being integers."""
    for key, (name, unit) in CURVE_UNITS.items():
        pairs = sorted((float(p[key]), float(p[f"{metric}_mean"])) for p in points if p.get(key) is not None)
        for x, y in pairs:
            writer.add_scalar(f"scaling/{metric}_vs_{name}", y, global_step=round(x / unit))
            writer.add_scalar(f"scaling/{metric}_vs_log10_{key}_x1000", y, global_step=round(1000 * np.log10(x)))


def _fit_axis(
    ax: Any, points: list[dict[str, Any]], rows: list[dict[str, Any]], key: str, label: str, metric: str
) -> dict[str, Any] | None:
    """Fit (on the points' means, weighted by their seeds' spread), bootstrap intervals, holdout test
    and plot of ``metric`` against ``key`` over the points that have ``key``; every run is drawn."""
    having = [p for p in points if p.get(key) is not None]
    x = np.array([float(p[key]) for p in having])
    y = np.array([float(p[f"{metric}_mean"]) for p in having])
    std = np.array([np.nan if p[f"{metric}_std"] is None else p[f"{metric}_std"] for p in having])
    runs = [(float(r[key]), float(r[metric])) for r in rows if r.get(key) is not None]
    ax.scatter([r[0] for r in runs], [r[1] for r in runs], s=12, alpha=0.6, label="runs")
    if np.isfinite(std).any():
        ax.errorbar(x, y, yerr=np.nan_to_num(std), fmt="o", color="black", capsize=3, label="mean +- std over seeds")
    ax.set(xscale="log", xlabel=label, ylabel=f"eval {metric}")
    fit = None
    if len(set(x)) >= 2 and (y > 0).all():
        sigma = usable_sigma(std)
        fit = fit_power_law(x, y, sigma)
        fit["intervals"] = bootstrap_power_law(x, [point_runs(rows, p, metric) for p in having], sigma)
        grid = np.geomspace(x.min(), x.max(), 50)
        legend = f"{fit['a']:.3g} C^-{fit['b']:.3f} + {fit['c']:.3g} (rmse {fit['rmse']:.2g})"
        if "note" in fit:
            legend = f"no power law: loss does not fall with C (log-log slope {fit['loglog_slope']:+.4f})"
        ax.plot(grid, law_value(fit, grid), label=legend)
        fit["holdout"] = holdout = holdout_test(x, y, sigma) if len(set(x)) == len(x) else None
        if holdout is not None:
            ax.plot(grid, law_value(holdout["fit"], grid), "--", color="gray", label="fit without the largest point")
            draw_prediction(ax, holdout, f"({100 * holdout['rel_error']:.2f}% off)")
        if len(having) < len(points):
            fit["note_points"] = NO_COMPUTE
    ax.legend(fontsize="small")
    return fit


def _flag_noisy(points: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """:func:`noisy_points` along training compute (forward FLOPs/example when a point lacks it), logged;
    with several data sizes each size's curve is checked on its own (its neighbours are its sizes)."""
    key = "train_compute" if all(p.get("train_compute") for p in points) else "flops_per_example"
    sizes = data_sizes(points)
    curves = [[p for p in points if p.get("train_rows") and int(p["train_rows"]) == rows] for rows in sizes]
    flagged = [item for curve in (curves if len(sizes) > 1 else [points]) for item in noisy_points(curve, key, metric)]
    for item in flagged:
        log.warning(
            "%s: %s std over seeds %.5f exceeds the gap %.5f to the nearest size's mean: within noise",
            item["point"],
            metric,
            item["std"],
            item["gap_to_neighbour"],
        )
    return flagged


def point_runs(rows: list[dict[str, Any]], point: dict[str, Any], metric: str) -> np.ndarray:
    """The per-seed values of ``metric`` of ``point``'s runs (what the bootstrap resamples)."""
    return np.array([float(r[metric]) for r in rows if r["point"] == point["point"] and r.get(metric) is not None])


def summarize(rows: list[dict[str, Any]], output: Path, metric: str = "logloss") -> dict[str, Any]:
    """runs -> points (means over seeds) -> fit.json (fits with bootstrap intervals, holdout tests,
    noisy points; with a ``train_rows`` column the two-axis keys of
    :func:`terarec.launch.scaling_law2d.two_axis_summary`), scaling.png, TensorBoard scaling curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    points = aggregate(rows, point_keys(rows))
    fits: dict[str, Any] = {}
    two_axes = len(data_sizes(points)) > 1  # model size x data size: a panel with one curve per data size
    panels = len(FIT_AXES) + int(two_axes)
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    for ax, (key, label) in zip(np.atleast_1d(axes), FIT_AXES.items()):
        fit = _fit_axis(ax, points, rows, key, label, metric)
        if fit is not None:
            fits[key] = fit
    summary = {"metric": metric, "fits": fits, "points": len(points), "runs": len(rows)}
    summary["noisy_points"] = _flag_noisy(points, metric)
    if two_axes:  # fit both axes
        runs = {str(p["point"]): point_runs(rows, p, metric) for p in points}
        summary.update(two_axis_summary(points, runs, metric))
        short = runs_short_of_their_rows(rows)
        if short:  # D would be rows the run never read: the data axis says nothing
            summary["verdict"] = (
                f"no data-axis verdict: {len(short)} run(s) trained fewer samples than their train_rows "
                f"(train.max_steps or train.max_minutes cut them, e.g. {short[0]}), so D is not the data they saw"
            )
            summary["data_limit"] = {"data_limited": None, "verdict": summary["verdict"]}
            log.warning("%s", summary["verdict"])
        else:
            log.info("%s", summary["verdict"])
        draw_data_sizes(np.atleast_1d(axes)[-1], points, summary, metric)
    writer = SummaryWriter(str(output / "tb"))
    _log_curves(writer, points, metric)
    log_per_data_size(writer, points, metric)
    _log_hparams(writer, rows, seeded=len(points) < len(rows))
    writer.close()
    figure.tight_layout()
    figure.savefig(output / "scaling.png", dpi=120)
    plt.close(figure)
    (output / "fit.json").write_text(json.dumps(summary, indent=2) + "\n")
    return fits


RUN_OWN = (
    "point",
    "seed",
    "logloss",
    "auc",
    "ne",
    "steps",
    "wall_s",
    "valid_logloss",
    "valid_auc",
    "selected",
    "threads",
)


def point_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Columns shared by a point's seeds (grid keys, sizes, compute, the chosen select value): all but
    the run's own numbers."""
    return [k for k in rows[0] if k not in RUN_OWN]
