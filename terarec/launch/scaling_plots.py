"""The data axis of a sweep's summary: loss against training compute with one curve per data size
(and its ``L(C) = a * C^-b + c`` fit, made by ``terarec.launch.scaling_law2d``), in scaling.png and
TensorBoard.

A point's data size is its ``train_rows`` column (the rows one epoch trains on, recorded by the
trainer); points without it or without ``train_compute`` are left out. With fewer than two data
sizes nothing here draws or logs: a single-axis sweep looks as it always did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from terarec.launch.scaling_fit import law_value

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


def draw_prediction(ax: Any, holdout: dict[str, Any], note: str) -> None:
    """A holdout test's prediction of its held-out point, +- its 1-sigma interval (the fit's parameter
    errors, delta method; a red bar), against the observed value (the legend)."""
    err = holdout.get("predicted_err")
    ax.errorbar(
        [holdout["held_out_x"]],
        [holdout["predicted"]],
        yerr=None if err is None else [[err], [err]],
        fmt="x",
        markersize=9,
        capsize=4,
        color="red",
        label=f"predicted {holdout['predicted']:.4f}"
        + ("" if err is None else f" +- {err:.4f}")
        + f" vs {holdout['observed']:.4f} {note}",
    )


def draw_data_sizes(ax: Any, points: list[dict[str, Any]], summary: dict[str, Any], metric: str) -> None:
    """Draw ``metric`` vs training compute on ``ax``: one curve per data size (points with their spread
    over seeds, its ``L(C)`` fit and holdout prediction from ``summary["per_data_size"]``), the measured
    compute-optimal frontier and the fitted law's (``summary["frontier"]``), titled with the data-limit
    verdict."""
    per_size = {entry["train_rows"]: entry for entry in summary["per_data_size"]}
    for rows in data_sizes(points):
        x, y, std = _curve(points, rows, metric)
        drawn = ax.errorbar(x, y, yerr=np.nan_to_num(std), fmt="o", capsize=3, label=f"{rows:,} rows")
        entry = per_size.get(float(rows), {})
        fit, holdout = entry.get("fit"), entry.get("holdout")
        if fit is not None and len(set(x)) >= 2:
            grid = np.geomspace(x.min(), x.max(), 50)
            legend = f"{fit['a']:.3g} C^-{fit['b']:.3f} + {fit['c']:.3g}"
            ax.plot(grid, law_value(fit, grid), color=drawn.lines[0].get_color(), linewidth=1, label=legend)
        if holdout:
            draw_prediction(ax, holdout, f"at {rows:,} rows")
    measured = summary["frontier"]["points"]
    ax.plot([f["compute"] for f in measured], [f["loss"] for f in measured], "k-", label="frontier (points)")
    law = summary["frontier"]["law"]
    if law:
        ax.plot([f["compute"] for f in law], [f["loss"] for f in law], "k--", label="frontier (L(N, D))")
    ax.set(xscale="log", xlabel="training compute (FLOPs)", ylabel=f"eval {metric}")
    ax.set_title(summary["verdict"].split(":")[0], fontsize="small")
    ax.legend(fontsize="x-small")


def log_per_data_size(writer: Any, points: list[dict[str, Any]], metric: str) -> None:
    """TensorBoard curves per data size (two or more sizes): ``scaling/M_vs_train_compute_gflop/rows_R``
    (step: GFLOP) and ``scaling/M_vs_log10_train_compute_x1000/rows_R`` (step: 1000 * log10 FLOPs). A
    size whose computes round to the same GFLOP step (a tiny sweep) gets only the log10 curve: TensorBoard
    keeps one value per step, so the GFLOP one would silently drop points."""
    sizes = data_sizes(points)
    if len(sizes) < 2:
        return
    for rows in sizes:
        x, y, _ = _curve(points, rows, metric)
        gflop_steps = [round(compute / COMPUTE_UNIT) for compute in x]
        distinct = len(set(gflop_steps)) == len(gflop_steps)
        for compute, step, value in zip(x, gflop_steps, y):
            if distinct:
                writer.add_scalar(f"scaling/{metric}_vs_train_compute_gflop/rows_{rows}", value, global_step=step)
            writer.add_scalar(
                f"scaling/{metric}_vs_log10_train_compute_x1000/rows_{rows}",
                value,
                global_step=round(1000 * np.log10(compute)),
            )
