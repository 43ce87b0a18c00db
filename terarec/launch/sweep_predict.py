"""``terarec sweep --config SWEEP --predict FLAVOR_OR_COMPUTE``: the sweep's fitted law at a larger configuration.

The law is the one in ``SWEEP/fit.json`` against training compute. The target is a training compute
in FLOPs (a number, e.g. ``3e15``) or a flavor of the sweep's model, whose training FLOPs/example
come from ``terarec models --json`` (run as a child process: launch does not import the models) on
the flavor's reference schema, times the samples the sweep's largest point trained on (or
``--predict-samples``). When the sweep's own flavors are in the registry, their registry FLOPs are
compared with what the sweep measured on its data; a mismatch (another schema or embedding width)
is reported, because the prediction's x is then on another scale than the fit's.

A two-axis sweep (``fit.json`` holds ``fit_2d``: the law ``L(N, D)`` over FLOPs/example and train rows)
predicts from that law instead, never from its mixed-data compute fit: at a flavor (``N``) and
``--predict-samples`` (``D``), when the sweep's points each trained one pass over their rows (so samples
are rows); any other case (a compute target, no ``--predict-samples``, several epochs, no fitted law)
is refused in one line naming why. The 2D prediction has no delta-method error (``predicted_err`` None).

The error is 1 sigma of the fit's parameter uncertainty, propagated to the prediction by the delta
method (:func:`terarec.launch.scaling_fit.predict`). It does not cover a wrong functional form or a
regime change beyond the sweep: the holdout test's error (reported alongside) is the check on that.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from terarec.configs.loader import load_config
from terarec.errors import UserError
from terarec.launch.scaling_fit import predict
from terarec.launch.sweep import SweepSpec

FLOPS_MISMATCH = 0.02  # registry vs measured FLOPs/example of the same flavor, relative


def sweep_model(spec: SweepSpec) -> str:
    """The model the sweep trains (its first point's ``model.name``)."""
    return load_config(spec.base, spec.point_overrides(spec.points()[0])).model.name


def registry_flops() -> list[dict[str, Any]]:
    """Every (model, flavor) of ``terarec models --json``: its train FLOPs/example on the reference schema."""
    done = subprocess.run(
        [sys.executable, "-m", "terarec.cli", "models", "--json"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"terarec models --json failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def _read_sweep(output: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``output/fit.json`` and the rows of ``output/points.csv``."""
    try:
        summary = json.loads((output / "fit.json").read_text())
        points = list(csv.DictReader((output / "points.csv").open()))
    except (OSError, ValueError):
        raise UserError(f"no readable fit.json and points.csv in {output}: run the sweep first") from None
    return summary, points


def _compute_fit(output: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The compute-axis fit of ``fit.json`` (a one-axis sweep's law)."""
    fit = summary.get("fits", {}).get("train_compute")
    if fit is None:
        raise UserError(f"{output / 'fit.json'} has no fit against training compute (fewer than 2 sizes?)")
    if "note" in fit:
        raise UserError(f"{output / 'fit.json'}: no law to predict from: {fit['note']}")
    return fit


def _flavor_compute(
    model: str, flavor: str, samples: int, points: list[dict[str, str]], registry: list[dict[str, Any]]
) -> tuple[float, dict[str, Any]]:
    """Training compute of ``flavor`` on ``samples`` and how it was found, with the registry-vs-sweep check."""
    by_flavor = {r["flavor"]: r for r in registry if r["model"] == model}
    if flavor not in by_flavor:
        raise UserError(f"--predict {flavor}: not a flavor of {model} (flavors: {', '.join(sorted(by_flavor))})")
    per_example = int(by_flavor[flavor]["train_flops_per_example"])
    ratios = {
        p["model.flavor"]: int(p["train_flops_per_example"])
        / int(by_flavor[p["model.flavor"]]["train_flops_per_example"])
        for p in points
        if p.get("model.flavor") in by_flavor and p.get("train_flops_per_example")
    }
    source = {"flavor": flavor, "train_flops_per_example": per_example, "samples": samples}
    source["measured_vs_registry"] = ratios
    return float(per_example * samples), source


def predict_from_sweep(
    output: Path,
    target: str,
    model: str,
    samples: int | None = None,
    lookup: Callable[[], list[dict[str, Any]]] = registry_flops,
) -> dict[str, Any]:
    """The predicted loss (and its 1-sigma error) at ``target`` (FLOPs, or a flavor of ``model``)."""
    if samples is not None and samples < 1:
        raise UserError(f"--predict-samples {samples}: must be >= 1")
    summary, points = _read_sweep(output)
    if "fit_2d" in summary:
        return predict_2d(output, summary["fit_2d"], points, target, model, samples, lookup)
    fit = _compute_fit(output, summary)
    computed = [p for p in points if p.get("train_compute")]
    largest = max(computed, key=lambda p: float(p["train_compute"]))
    result: dict[str, Any] = {}
    try:
        compute = float(target)
    except ValueError:
        trained = samples if samples is not None else int(largest["samples"])
        compute, result["source"] = _flavor_compute(model, target, trained, points, lookup())
    if not compute > 0:
        raise UserError(f"--predict {target}: a training compute must be > 0 FLOPs")
    value, error = predict(fit, compute)
    holdout = fit.get("holdout") or {}
    result.update(
        compute=compute,
        predicted=value,
        predicted_err=error,
        fit={k: fit[k] for k in ("form", "a", "b", "c")},
        fitted_range=[min(float(p["train_compute"]) for p in computed), float(largest["train_compute"])],
        extrapolation=compute / float(largest["train_compute"]),
        holdout_rel_error=holdout.get("rel_error"),
    )
    return result


def predict_2d(
    output: Path,
    fit: dict[str, Any],
    points: list[dict[str, str]],
    target: str,
    model: str,
    samples: int | None,
    lookup: Callable[[], list[dict[str, Any]]],
) -> dict[str, Any]:
    """A two-axis sweep's prediction from ``L(N, D)`` at flavor ``target`` (N) on ``samples`` rows (D)."""
    from terarec.launch.scaling_law2d import law_2d_value

    why = _refuse_2d(fit, points, target, samples)
    if why is not None:
        raise UserError(f"--predict {target} on the two-axis sweep {output}: {why}")
    assert samples is not None  # _refuse_2d: --predict-samples is required
    compute, source = _flavor_compute(model, target, samples, points, lookup())
    n, d = float(source["train_flops_per_example"]), float(samples)
    largest = max(float(p["train_compute"]) for p in points if p.get("train_compute"))
    return {
        "source": source,
        "compute": compute,
        "predicted": float(law_2d_value(fit, n, d)),
        "predicted_err": None,
        "law_2d": {k: fit[k] for k in ("form", "E", "A", "alpha", "B", "beta")},
        "at": {"N": n, "D": d},
        "fitted_range": [min(float(p["train_compute"]) for p in points if p.get("train_compute")), largest],
        "extrapolation": compute / largest,
        "holdout_rel_error": (fit.get("holdout") or {}).get("rel_error"),
    }


def _refuse_2d(fit: dict[str, Any], points: list[dict[str, str]], target: str, samples: int | None) -> str | None:
    """Why ``L(N, D)`` cannot answer this ``--predict`` simply (None: it can)."""
    if not fit.get("fitted"):
        return f"its L(N, D) was not fitted ({fit.get('note', 'no note')})"
    try:
        float(target)
        return "a training compute does not say N and D apart: pass a flavor (N) and --predict-samples (D)"
    except ValueError:
        pass
    if samples is None:
        return "L(N, D) needs the data size: pass --predict-samples (train rows, one pass)"
    passes = {p["samples"] == p["train_rows"] for p in points if p.get("samples") and p.get("train_rows")}
    if passes != {True}:
        return "its points did not each train one pass over their rows, so samples are not the law's D"
    return None


def report(result: dict[str, Any], metric: str = "logloss") -> list[str]:
    """The prediction in a few lines for the terminal."""
    err = result["predicted_err"]
    spread = f" +- {err:.5f} (1 sigma of the fit's parameters, delta method)" if err is not None else ""
    lines = [f"predicted eval {metric} at {result['compute']:.4g} training FLOPs: {result['predicted']:.5f}{spread}"]
    source = result.get("source")
    if source:
        lines.append(
            f"  {source['flavor']}: {source['train_flops_per_example']:,} train FLOPs/example (terarec models, "
            f"reference schema) x {source['samples']:,} samples"
        )
        off = {f: r for f, r in source["measured_vs_registry"].items() if abs(r - 1) > FLOPS_MISMATCH}
        if off:
            shown = ", ".join(f"{f} x{r:.3g}" for f, r in off.items())
            lines.append(
                f"  warning: the sweep measured other FLOPs/example than the registry for its own flavors ({shown}): "
                "the prediction's compute is not on the fit's scale; pass a compute in FLOPs instead"
            )
    low, high = result["fitted_range"]
    if "law_2d" in result:
        law = result["law_2d"]
        lines.append(
            f"  law {law['form']}: E={law['E']:.4g} A={law['A']:.4g} alpha={law['alpha']:.4g} B={law['B']:.4g} "
            f"beta={law['beta']:.4g} at N={result['at']['N']:.4g}, D={result['at']['D']:.4g} "
            f"({result['extrapolation']:.3g}x the largest point's compute)"
        )
    else:
        lines.append(_law_line(result, low, high))
    if result["holdout_rel_error"] is not None:
        lines.append(
            f"  the sweep's holdout test (largest point predicted from the others) was "
            f"{100 * result['holdout_rel_error']:.2f}% off: the error above does not cover the law's form"
        )
    if err is None:
        why = "L(N, D) predictions carry none" if "law_2d" in result else "the fit has too few points for a covariance"
        lines.append(f"  no parameter uncertainty: {why}")
    return lines


def _law_line(result: dict[str, Any], low: float, high: float) -> str:
    fit = result["fit"]
    return (
        f"  law {fit['form']}: a={fit['a']:.4g} b={fit['b']:.4g} c={fit['c']:.4g}, fitted on {low:.3g} .. {high:.3g} "
        f"FLOPs ({result['extrapolation']:.3g}x the largest point)"
    )
