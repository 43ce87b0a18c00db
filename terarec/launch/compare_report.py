"""``terarec compare``'s calibration report: the ECE/MCE/Brier table (before and, with ``--calibrate``, after
post-hoc calibration) and the reliability diagram panel of ``compare.png``.

Every run's ``metrics.json`` (models: the trainer's final eval; baselines: ``terarec.baselines.tabular``)
carries ``brier``, ``ece``, ``mce`` (10 equal-width bins), ``ece_mass``/``mce_mass`` (10 equal-mass bins)
and ``reliability`` (the equal-mass bins: mean prediction, observed rate, rows), all computed by
``trainer.metrics.BinaryMetrics`` on the eval split, so models and baselines compare. With ``--calibrate``
the model runs also get ``calibrated_*`` keys: the same metrics of ``terarec eval --calibrated`` (eval split)
after ``terarec calibrate`` fitted the calibrator on the validation rows (``launch/compare_calibrate.py``).
"""

from __future__ import annotations

import math
from typing import Any

CALIBRATED = "calibrated_"  # prefix of a run's metrics after post-hoc calibration
ERRORS = ("ece", "mce", "brier")  # the calibration errors the table shows, before and after
CALIBRATION_COLUMNS = (*ERRORS, *(CALIBRATED + key for key in ERRORS))  # averaged over seeds like AUC


def _value(result: dict[str, Any], key: str, digits: int) -> str:
    """Mean (± std over seeds) of ``key``; an em dash when no run has it (e.g. a baseline's calibrated ECE)."""
    mean, std = result["mean"].get(key, math.nan), result["std"].get(key, math.nan)
    if mean is None or math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(result["runs"]) > 1 else f"{mean:.{digits}f}"


def calibration_table(report: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per model/baseline with ECE, MCE and Brier on the eval split, and with
    ``--calibrate`` the calibrator and the same three after it (lower is better for all)."""
    method = report.get("calibrate")
    lines = [
        "",
        "## Calibration (eval split; ECE/MCE over 10 equal-width bins, lower is better)",
        "",
    ]
    if method:
        lines += [
            f"After: `terarec calibrate --method {method}` fitted on each model run's validation rows only, then "
            "`terarec eval --calibrated` on the eval split. Baselines are not post-hoc calibrated (—).",
            "",
            "| model | ECE | MCE | Brier | calibrator | ECE after | MCE after | Brier after |",
            "|---|--:|--:|--:|---|--:|--:|--:|",
        ]
    else:
        lines += ["| model | ECE | MCE | Brier |", "|---|--:|--:|--:|"]
    for result in report["results"]:
        before = " | ".join(_value(result, key, 4) for key in ERRORS)
        if not method:
            lines.append(f"| {result['name']} | {before} |")
            continue
        after = " | ".join(_value(result, CALIBRATED + key, 4) for key in ERRORS)
        used = method if result["kind"] == "model" else "—"
        lines.append(f"| {result['name']} | {before} | {used} | {after} |")
    return lines


def plot_reliability(ax: Any, results: list[dict[str, Any]]) -> None:
    """A reliability diagram per model on ``ax``: the equal-mass bins' mean prediction (x) against the
    observed positive rate (y) of each entry's first seed (solid; dashed: after post-hoc calibration);
    the diagonal is perfect calibration."""
    top = 0.0
    for index, result in enumerate(results):
        color = f"C{index % 10}"
        run = result["runs"][0]
        for key, style, label in (
            ("reliability", "-o", result["name"]),
            (CALIBRATED + "reliability", "--x", f"{result['name']} calibrated"),
        ):
            bins = run.get(key) or {}
            if bins.get("pred"):
                ax.plot(bins["pred"], bins["obs"], style, color=color, markersize=3, label=label)
                top = max(top, *bins["pred"], *bins["obs"])
    top = min(1.0, top * 1.05) if top > 0 else 1.0
    ax.plot([0, top], [0, top], ":", color="black", linewidth=1, label="perfect")
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        title="reliability (10 equal-mass bins, eval)",
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
    )
    ax.legend(fontsize=7)
