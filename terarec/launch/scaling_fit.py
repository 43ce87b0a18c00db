"""The scaling law of a sweep: per-point means over seeds, the weighted power-law fit, its holdout
test, noisy points, and predictions with their uncertainty.

``L(C) = a * C^-b + c`` is fitted with scipy's ``curve_fit`` on the points' mean losses, weighted
by ``1 / std^2`` across seeds (``sigma=std``, ``absolute_sigma=False``: the weights are relative and
the covariance is scaled by the residual variance); unweighted with one seed or when a point's std
is 0. Below 4 points, or when that fit fails, it is the pure power law ``a * C^-b`` by (weighted)
least squares in log-log space. Each fit keeps its parameter covariance, so a prediction carries a
1-sigma error by the delta method (first-order propagation of that covariance through the law).
Parameter intervals come from a percentile bootstrap over points and seeds (:func:`bootstrap_power_law`),
which, unlike the delta method, needs no linearisation of the law.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

NO_SCALING = (
    "the loss does not fall with C over this range (b at its bound 0 or a rising log-log slope): no power law "
    "to fit, and the parameter errors are not meaningful; train on more data or over a wider range of C"
)
B_UPPER = 3.0  # the fit's bound on the exponent b: keeps the search sane; a fit that ends there is degenerate
AT_UPPER_BOUND = (
    "b ran into its upper bound: the points drop once and then sit on a floor (a step, not a power law), "
    "so the floor is a guess and the exponent and its errors are not meaningful"
)
METRICS = ("logloss", "auc", "ne")  # averaged over a point's seeds
# Bootstrap refits per interval: bounds the cost (one fit per resample: about 1 s for L(C), a few s for
# L(N, D)); each 2.5/97.5 percentile then rests on the 5 most extreme of 200 draws, coarse but stable
BOOTSTRAP_RESAMPLES = 200
# A bootstrap refit (started from the full fit) that needs more evaluations than this counts as not
# converged: such searches were seen to crawl into a bound (floor c -> 0 with b -> 0, or b -> 3), a
# degenerate law, on resamples of few distinct sizes; the cap also bounds the cost
REFIT_EVALUATIONS = 200


def usable_sigma(std: np.ndarray | None) -> np.ndarray | None:
    """Per-point std as curve_fit's ``sigma``, or None (unweighted) when any is missing or 0."""
    if std is None or len(std) == 0:
        return None
    std = np.asarray(std, dtype=float)
    return std if bool(np.all(np.isfinite(std) & (std > 0))) else None


def _loglog_fit(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None) -> dict[str, Any]:
    """``log L = log_a + slope * log C`` by weighted least squares (weight ``y / sigma``: the log's
    error is ``sigma / y``); the covariance of (log_a, slope) needs 3 points (1 residual dof)."""
    lx, ly = np.log(x), np.log(y)
    w = np.ones_like(lx) if sigma is None else y / sigma
    design = np.stack([np.ones_like(lx), lx], axis=1) * w[:, None]
    (log_a, slope), *_ = np.linalg.lstsq(design, ly * w, rcond=None)
    fit: dict[str, Any] = {"form": "a*C^-b", "a": float(np.exp(log_a)), "b": float(-slope), "c": 0.0}
    fit["loglog_slope"] = float(slope)
    if len(x) >= 3:
        residual = ly * w - design @ np.array([log_a, slope])
        cov = np.linalg.inv(design.T @ design) * float(residual @ residual) / (len(x) - 2)
        fit["cov"] = {"params": ["log_a", "slope"], "matrix": cov.tolist()}
    return fit


def fit_power_law(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None, start: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``L(C) = a * C^-b + c`` (``c`` is the irreducible loss) when there are at least 4 points and it
    converges, else the pure power law ``L = a * C^-b`` in log-log space. ``sigma``: per-point std
    (weights ``1/sigma^2``; see :func:`usable_sigma`). Returns the parameters, their standard errors
    where known, ``cov`` (for :func:`predict`), the RMSE, the plain log-log slope, ``weighted``, and a
    ``note`` when the loss does not fall with ``C`` (nothing to fit). ``start``: a previous
    ``a*C^-b+c`` fit to start the search from (the bootstrap's refits: fewer iterations)."""
    x, y, sigma = np.asarray(x, dtype=float), np.asarray(y, dtype=float), usable_sigma(sigma)
    pure = _pure_fit(x, y, sigma)
    if len(x) < 4:
        return pure
    scale = float(x.min())  # C / C_min keeps a and b well conditioned
    solved = _curve_fit(x, y, sigma, scale, start)
    if solved is None:
        return pure
    params, cov = solved
    a, b, c = (float(v) for v in params)
    finite = bool(np.all(np.isfinite(cov)))
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if finite else np.full(3, np.nan)
    fit = {
        "form": "a*C^-b+c",
        "a": a * scale**b,
        "b": b,
        "c": c,
        "a_err": float(errors[0] * scale**b),
        "b_err": float(errors[1]),
        "c_err": float(errors[2]),
        "rmse": float(np.sqrt(np.mean((a * (x / scale) ** -b + c - y) ** 2))),
        "loglog_slope": pure["loglog_slope"],
        "weighted": sigma is not None,
    }
    if finite:  # in the fitted (scaled) parameters: a_scaled = a * scale^-b
        fit["cov"] = {"params": ["a_scaled", "b", "c"], "scale": scale, "a_scaled": a, "matrix": cov.tolist()}
    note = _degenerate_note(b, pure["loglog_slope"])
    if note is not None:
        fit["note"] = note
    return fit


def _curve_fit(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, scale: float, start: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a_scaled, b, c)`` and their covariance of ``a_scaled (C / scale)^-b + c`` (None: no convergence)."""
    from scipy.optimize import curve_fit

    def law(c: np.ndarray, a: float, b: float, floor: float) -> np.ndarray:
        return a * (c / scale) ** -b + floor

    def gradient(c: np.ndarray, a: float, b: float, floor: float) -> np.ndarray:
        """d law / d (a, b, floor), exact: a numeric one costs 3 extra evaluations a step (bootstrap refits)."""
        ratio = c / scale
        power = ratio**-b
        return np.stack([power, -a * power * np.log(ratio), np.ones_like(c)], axis=1)

    try:
        # a, b, c >= 0: a loss that falls with compute towards a floor (b <= 3 keeps the search sane)
        params, cov = curve_fit(
            law,
            x,
            y,
            p0=_start(x, y, scale, start),
            sigma=sigma,
            absolute_sigma=False,
            bounds=([0.0, 0.0, 0.0], [np.inf, B_UPPER, np.inf]),
            jac=gradient,
            maxfev=20000 if start is None else REFIT_EVALUATIONS,
        )
    except (RuntimeError, ValueError):
        return None
    return params, cov


def _degenerate_note(b: float, loglog_slope: float) -> str | None:
    """A full fit's ``note`` when its exponent sits at a bound (the errors then come from a degenerate
    covariance): no scaling at ``b`` ~ 0 or a rising loss, a single drop onto a floor at the upper bound."""
    if b < 1e-3 or loglog_slope >= 0:
        return NO_SCALING
    if b > B_UPPER * (1 - 1e-3):
        return AT_UPPER_BOUND
    return None


def _pure_fit(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None) -> dict[str, Any]:
    """The pure power law ``L = a C^-b`` (log-log) with its RMSE, ``weighted`` and the no-scaling note."""
    pure = _loglog_fit(x, y, sigma)
    pure["rmse"] = float(np.sqrt(np.mean((law_value(pure, x) - y) ** 2)))
    pure["weighted"] = sigma is not None
    if pure["loglog_slope"] >= 0:
        pure["note"] = NO_SCALING
    return pure


def _start(x: np.ndarray, y: np.ndarray, scale: float, start: dict[str, Any] | None) -> tuple[float, float, float]:
    """curve_fit's first guess in its scaled parameters: ``start``'s when given (and a full law), else
    the loss range, a shallow exponent and a floor just under the lowest loss."""
    if start is not None and start.get("form") == "a*C^-b+c":
        return float(start["a"]) * scale ** -float(start["b"]), float(start["b"]), float(start["c"])
    return float(y.max() - y.min()) or 1e-3, 0.1, float(y.min()) * 0.9


def law_value(fit: dict[str, Any], x: np.ndarray | float) -> Any:
    """The fitted law ``a * x^-b + c`` at ``x``."""
    return fit["a"] * np.asarray(x, dtype=float) ** -fit["b"] + fit["c"]


def predict(fit: dict[str, Any], x: float) -> tuple[float, float | None]:
    """The law at ``x`` and its 1-sigma error from the parameters' covariance (delta method:
    ``sqrt(g^T cov g)``, ``g`` the law's gradient in the fitted parameters); None without a covariance."""
    value = float(law_value(fit, x))
    cov = fit.get("cov")
    if cov is None:
        return value, None
    if cov["params"] == ["log_a", "slope"]:
        gradient = np.array([value, value * np.log(x)])  # L = exp(log_a) * x^slope
    else:
        ratio = x / cov["scale"]
        power = ratio ** -fit["b"]
        gradient = np.array([power, -cov["a_scaled"] * power * np.log(ratio), 1.0])
    variance = float(gradient @ np.asarray(cov["matrix"]) @ gradient)
    return value, float(np.sqrt(max(variance, 0.0)))


def holdout_test(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None) -> dict[str, Any] | None:
    """Prediction, not description: fit on every point but the one of largest ``x``, predict it.

    Returns the held-out point, the prediction (and its 1-sigma error where the fit has one),
    ``abs_error = |predicted - observed|``, ``rel_error = abs_error / observed``, and the error as a
    fraction of the loss drop across the sweep (smallest-x loss minus largest-x loss; None when the
    loss does not drop). None below 3 points (the fit on the others needs 2). The law is
    :func:`fit_power_law`'s, so with fewer than 4 points left it is the pure power law.
    """
    if len(x) < 3:
        return None
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    sigma = None if sigma is None else np.asarray(sigma, dtype=float)[order][:-1]
    fit = fit_power_law(x[:-1], y[:-1], sigma)
    (predicted, error), observed = predict(fit, float(x[-1])), float(y[-1])
    abs_error, drop = abs(predicted - observed), float(y[0] - y[-1])
    return {
        "held_out_x": float(x[-1]),
        "observed": observed,
        "predicted": predicted,
        "predicted_err": error,
        "abs_error": abs_error,
        "rel_error": abs_error / abs(observed),
        "loss_drop": drop,
        "error_vs_loss_drop": abs_error / drop if drop > 0 else None,
        "points_fitted": len(x) - 1,
        "fit": {k: fit[k] for k in ("form", "a", "b", "c")},
    }


def aggregate(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Runs -> points: rows sharing ``point`` (its seeds) become one, in first-seen order, with
    ``seeds`` (the count), ``keys`` taken from the first run, and ``M_mean`` / ``M_std`` (sample std,
    ddof 1; None with one seed) for each metric M of :data:`METRICS` the runs recorded."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["point"]), []).append(row)
    points = []
    for name, runs in groups.items():
        point: dict[str, Any] = {"point": name, "seeds": len(runs), **{k: runs[0].get(k) for k in keys}}
        for metric in METRICS:
            values = np.array([float(r[metric]) for r in runs if r.get(metric) is not None])
            point[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            point[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        points.append(point)
    return points


def noisy_points(points: list[dict[str, Any]], key: str, metric: str) -> list[dict[str, Any]]:
    """Points whose seed-to-seed std of ``metric`` exceeds the gap between their mean and the nearest
    neighbouring size's mean (sizes ordered by ``key``): their place on the curve is within noise."""
    ordered = sorted((p for p in points if p.get(key) is not None), key=lambda p: float(p[key]))
    flagged = []
    for i, point in enumerate(ordered):
        std = point.get(f"{metric}_std")
        neighbours = [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
        if std is None or not neighbours:
            continue
        gap = min(abs(point[f"{metric}_mean"] - n[f"{metric}_mean"]) for n in neighbours)
        if std > gap:
            flagged.append({"point": point["point"], "std": std, "gap_to_neighbour": gap})
    return flagged


def bootstrap_intervals(
    runs: Sequence[np.ndarray],
    refit: Callable[[np.ndarray, np.ndarray], dict[str, Any] | None],
    names: Sequence[str],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap over points and seeds: each resample draws the seed runs within every
    point with replacement (the point's loss is their mean), then draws the points with replacement;
    ``refit(indices, losses)`` fits the drawn points (``indices`` into ``runs``, one loss each) and
    returns the parameters, or None when that resample cannot be fitted (too few distinct sizes, no
    convergence). ``runs[i]``: point i's per-seed losses (one value without seeds: then only the
    points are resampled). Deterministic given ``seed``. Returns, per name in ``names``, the 2.5 and
    97.5 percentiles (and the median) over the fitted resamples, and the fraction that were fitted."""
    rng = np.random.default_rng(seed)
    runs = [np.asarray(r, dtype=float) for r in runs]
    drawn: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        means = np.array([rng.choice(r, size=len(r)).mean() for r in runs])  # seeds within each point
        indices = rng.integers(0, len(runs), size=len(runs))  # then the points
        fit = refit(indices, means[indices])
        if fit is None:
            continue
        for name in names:
            drawn[name].append(float(fit[name]))
    fitted = len(drawn[names[0]]) if names else 0
    result: dict[str, Any] = {
        "resamples": resamples,
        "seed": seed,
        "converged": fitted / resamples if resamples else 0.0,
    }
    result["params"] = {
        name: dict(zip(("low", "median", "high"), (float(v) for v in np.percentile(values, [2.5, 50, 97.5]))))
        for name, values in drawn.items()
        if values
    }
    return result


def bootstrap_power_law(
    x: np.ndarray,
    runs: Sequence[np.ndarray],
    sigma: np.ndarray | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`bootstrap_intervals` of :func:`fit_power_law` (parameters a, b, c): ``x`` per point,
    ``runs`` its seeds' losses, ``sigma`` the points' std over seeds (kept as each drawn point's weight:
    a resampled pair of seeds can have std 0, which would switch the weighting off at random). A
    resample counts as fitted when it has the full fit's form (``a*C^-b+c`` needs 3 distinct x)."""
    x = np.asarray(x, dtype=float)
    sigma = usable_sigma(sigma)
    full = fit_power_law(x, np.array([np.mean(r) for r in runs]), sigma)
    needed = 3 if full["form"] == "a*C^-b+c" else 2

    def refit(indices: np.ndarray, losses: np.ndarray) -> dict[str, Any] | None:
        if len(set(x[indices])) < needed or not bool(np.all(losses > 0)):
            return None
        fit = fit_power_law(x[indices], losses, None if sigma is None else sigma[indices], start=full)
        return fit if fit["form"] == full["form"] else None

    return bootstrap_intervals(runs, refit, ("a", "b", "c"), resamples, seed)
