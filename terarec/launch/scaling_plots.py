"""The data axis of a sweep's summary: loss against training compute with one curve (and one
``L(C) = a * C^-b + c`` fit) per data size, in scaling.png and TensorBoard.

A point's data size is its ``train_rows`` column (the rows one epoch trains on, recorded by the
trainer); points without it or without ``train_compute`` are left out. With fewer than two data
sizes nothing here draws or logs: a single-axis sweep looks as it always did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from terarec.launch.scaling_fit import fit_power_law, holdout_test, law_value, usable_sigma

COMPUTE_UNIT = 1e9  # TensorBoard steps in GFLOP, as the sweep's single-axis compute curve


def data_sizes(points: list[dict[str, Any]]) -> list[int]:
    """The distinct ``train_rows`` of the points that have training compute, ascending."""
    return sorted({int(p["train_rows"]) for p in points if p.get("train_rows") and p.get("train_compute")})


def _curve(points: list[dict[str, Any]], rows: int, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compute, mean metric, std over seeds: NaN when one seed) of the points trained on ``rows`` rows,
    ordered by compute."""
    having = sorted(
        (p for p in points if p.get("train_rows") and int(p["train_rows"]) == rows and p.get("train_compute")),
        key=lambda p: float(p["train_compute"]),
    )
    x = np.array([float(p["train_compute"]) for p in having])
    y = np.array([float(p[f"{metric}_mean"]) for p in having])
    std = np.array([np.nan if p.get(f"{metric}_std") is None else float(p[f"{metric}_std"]) for p in having])
    return x, y, std


def fit_per_data_size(ax: Any, points: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Draw ``metric`` vs training compute on ``ax``, one curve per data size, each with its fit where it
    has two or more compute values (and a holdout test of its largest point from three on); the fits
    keyed by ``str(train_rows)``."""
    fits: dict[str, Any] = {}
    for rows in data_sizes(points):
        x, y, std = _curve(points, rows, metric)
        drawn = ax.errorbar(x, y, yerr=np.nan_to_num(std), fmt="o", capsize=3, label=f"{rows:,} rows")
        color = drawn.lines[0].get_color()  # the fit in its points' colour
        if len(set(x)) < 2 or not (y > 0).all():
            continue
        sigma = usable_sigma(std)
        fit = fit_power_law(x, y, sigma)
        fit["points"] = len(x)
        fit["holdout"] = holdout_test(x, y, sigma) if len(set(x)) == len(x) else None
        grid = np.geomspace(x.min(), x.max(), 50)
        legend = f"{rows:,} rows: {fit['a']:.3g} C^-{fit['b']:.3f} + {fit['c']:.3g}"
        ax.plot(grid, law_value(fit, grid), color=color, label=legend)
        fits[str(rows)] = fit
    ax.set(xscale="log", xlabel="training compute (FLOPs)", ylabel=f"eval {metric}", title="one curve per data size")
    ax.legend(fontsize="small")
    return fits


def log_per_data_size(writer: Any, points: list[dict[str, Any]], metric: str) -> None:
    """TensorBoard curves per data size (two or more sizes): ``scaling/M_vs_train_compute_gflop/rows_R``
    (step: GFLOP) and ``scaling/M_vs_log10_train_compute_x1000/rows_R`` (step: 1000 * log10 FLOPs)."""
    sizes = data_sizes(points)
    if len(sizes) < 2:
        return
    for rows in sizes:
        x, y, _ = _curve(points, rows, metric)
        for compute, value in zip(x, y):
            writer.add_scalar(
                f"scaling/{metric}_vs_train_compute_gflop/rows_{rows}", value, global_step=round(compute / COMPUTE_UNIT)
            )
            writer.add_scalar(
                f"scaling/{metric}_vs_log10_train_compute_x1000/rows_{rows}",
                value,
                global_step=round(1000 * np.log10(compute)),
            )
