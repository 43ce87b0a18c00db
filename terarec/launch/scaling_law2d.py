"""The two-axis scaling law of a sweep over model size and data size, and what follows from it.

``L(N, D) = E + A * N^-alpha + B * D^-beta`` (Hoffmann et al. 2022; Ardalani et al. 2022 for
recommendation models): ``N`` the model size as given (terarec's sweeps pass training
FLOPs/example, so training compute is ``C = N * D * epochs``), ``D`` the training rows, ``E`` the
irreducible loss. The fit works in ``N / N_min`` and ``D / D_min`` (well conditioned for any unit):
for fixed exponents the law is linear in ``E, A, B``, so a grid over ``(alpha, beta)`` in ``(0, 3]``
with non-negative least squares for the rest gives a start that no local minimum can trap, which
scipy's bounded ``least_squares`` then refines on all five (``E, A, B >= 0``; exponents in
``[0, 3]``). Residuals are weighted by ``1 / std`` over seeds when every point has one (as in
:mod:`terarec.launch.scaling_fit`). Five parameters need at least 6 points (one residual degree of
freedom) and 3 distinct sizes on each axis (two sizes cannot separate a coefficient from its
exponent and the floor); with fewer the result says so and holds no parameters.

A term that is flat over the sweep (``A N^-alpha`` changing by less than ``FLAT_TERM_SHARE`` of its own
value between the smallest and largest ``N``, i.e. ``1 - (N_max/N_min)^-alpha < FLAT_TERM_SHARE``; the same
for ``D``) is a level the points cannot tell apart from ``E``: the fit would split one level between
``E`` and ``A`` at will (an exponent near 0 makes ``A`` anything). Then the nested law without it
(``A = 0``: ``L = E + B D^-beta``, or ``B = 0``) is fitted too, and it replaces the full law unless the
full law fits clearly better: the likelihood-ratio statistic ``n ln(SSR_nested / SSR_full)`` above
``FLAT_TERM_LR`` (chi-square with 2 degrees of freedom, the two parameters dropped, at 1%). So a real
but slow effect (a large ``A`` with a small ``alpha``: the nested law cannot follow it) is never dropped;
``reduced`` then says which term went, and ``E`` is identified again. A reduced law says nothing about
its dropped axis: :func:`data_limit_verdict` reads that axis's gain from the points.

Also here: per-data-size ``L(C)`` fits, the compute-optimal frontier (from the points, and from the
law), the data-limited verdict, and the two-axis holdout test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

from terarec.launch.scaling_fit import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_intervals,
    fit_power_law,
    holdout_test,
    usable_sigma,
)

FORM_2D = "E+A*N^-alpha+B*D^-beta"
PARAMS_2D = ("E", "A", "alpha", "B", "beta")
MIN_POINTS_2D, MIN_SIZES_2D = 6, 3
EXPONENT_GRID = np.geomspace(0.01, 3.0, 20)  # the start's grid for alpha and for beta
MAX_EXPONENT = 3.0
FLAT_TERM_SHARE = 0.05  # a term that moves less than 5% of its own value across the sweep is a level
FLAT_TERM_LR = 9.21  # chi2(2 dof).ppf(0.99): the evidence a flat (unidentified) term needs to be kept
# the two terms: coefficient and exponent positions in (E, A, alpha, B, beta), and the axis they scale
TERMS = {"A": (1, 2, "N", "alpha"), "B": (3, 4, "D", "beta")}


def too_few_2d(n: np.ndarray, d: np.ndarray) -> str | None:
    """Why these points cannot fit the five-parameter law, or None when they can. Points count as distinct
    ``(n, d)`` pairs: a bootstrap resample repeats points, and a repeat adds no constraint."""
    sizes, rows, points = len(set(n.tolist())), len(set(d.tolist())), len(set(zip(n.tolist(), d.tolist())))
    if points < MIN_POINTS_2D or sizes < MIN_SIZES_2D or rows < MIN_SIZES_2D:
        return (
            f"too few points for L(N, D) (5 parameters): {points} points (distinct N, D pairs) over {sizes} model "
            f"sizes and {rows} data sizes; it needs >= {MIN_POINTS_2D} points and >= {MIN_SIZES_2D} distinct sizes "
            "on each axis"
        )
    return None


def _grid_start(u: np.ndarray, v: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The best ``(E, A, alpha, B, beta)`` over the exponent grid, E, A, B by non-negative least squares."""
    from scipy.optimize import nnls

    best, start = np.inf, np.array([float(y.min()), 0.0, 0.1, 0.0, 0.1])
    for alpha in EXPONENT_GRID:
        for beta in EXPONENT_GRID:
            design = np.stack([np.ones_like(u), u**-alpha, v**-beta], axis=1) * w[:, None]
            coef, residual = nnls(design, y * w)
            if residual < best:
                best, start = residual, np.array([coef[0], coef[1], alpha, coef[2], beta])
    return start


def fit_law_2d(
    n: np.ndarray, d: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None, start: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``L(N, D) = E + A N^-alpha + B D^-beta`` on points ``(n, d, y)`` (``sigma``: their std over seeds).

    ``start``: a previous fit on the same scales to refine from (the bootstrap's refits) instead of
    the exponent grid. Returns ``fitted`` and, when fitted, the parameters (``A``, ``B`` in the
    given units; ``A_scaled``, ``B_scaled`` per ``n_scale``, ``d_scale``), the 1-sigma errors of
    ``E``, ``alpha``, ``beta`` from the Jacobian (scaled by the residual variance), the RMSE and
    ``weighted``; else a ``note`` saying why not.
    """
    from scipy.optimize import least_squares

    n, d, y = (np.asarray(a, dtype=float) for a in (n, d, y))
    note = too_few_2d(n, d)
    if note is not None:
        return {"form": FORM_2D, "fitted": False, "note": note, "points": len(y)}
    sigma = usable_sigma(sigma)
    w = np.ones_like(y) if sigma is None else 1.0 / sigma
    n_scale = float(start["n_scale"]) if start else float(n.min())
    d_scale = float(start["d_scale"]) if start else float(d.min())
    u, v = n / n_scale, d / d_scale
    if start:
        p0 = np.array([start["E"], start["A_scaled"], start["alpha"], start["B_scaled"], start["beta"]])
    else:
        p0 = _grid_start(u, v, y, w)

    def residual(p: np.ndarray) -> np.ndarray:
        return (p[0] + p[1] * u ** -p[2] + p[3] * v ** -p[4] - y) * w

    def jacobian(p: np.ndarray) -> np.ndarray:
        pu, pv = u ** -p[2], v ** -p[4]
        return np.stack([np.ones_like(u), pu, -p[1] * pu * np.log(u), pv, -p[3] * pv * np.log(v)], axis=1) * w[:, None]

    lower, upper = [0.0] * 5, [np.inf, np.inf, MAX_EXPONENT, np.inf, MAX_EXPONENT]
    solved = least_squares(residual, np.clip(p0, lower, upper), jac=jacobian, bounds=(lower, upper), method="trf")
    if not solved.success:
        return {"form": FORM_2D, "fitted": False, "note": f"least squares did not converge: {solved.message}"}
    params, solved, dropped, reduced = _reduce_if_flat(residual, solved, (u, v), (lower, upper), len(y))
    e, a, alpha, b, beta = (float(p) for p in params)
    fit: dict[str, Any] = {"form": FORM_2D, "fitted": True, "E": e, "alpha": alpha, "beta": beta}
    fit.update(A=a * n_scale**alpha, B=b * d_scale**beta, A_scaled=a, B_scaled=b, n_scale=n_scale, d_scale=d_scale)
    if dropped is None:
        fit.update(_errors(jacobian(params), residual(params), len(y), {0: "E", 2: "alpha", 4: "beta"}))
    else:  # the nested law's 3 parameters: E, then the kept term's coefficient and exponent
        kept = next(term for term in TERMS if term != dropped)
        fit.update(_errors(solved.jac, solved.fun, len(y), {0: "E", 2: TERMS[kept][3]}))
        fit[f"{TERMS[dropped][3]}_err"] = None
    fit["rmse"] = float(np.sqrt(np.mean((law_2d_value(fit, n, d) - y) ** 2)))
    fit.update(weighted=sigma is not None, points=len(y))
    if reduced is not None:
        fit["reduced"] = reduced
    return fit


def _reduce_if_flat(
    residual: Callable[[np.ndarray], np.ndarray],
    solved: OptimizeResult,
    axes: tuple[np.ndarray, np.ndarray],
    bounds: tuple[list[float], list[float]],
    points: int,
) -> tuple[np.ndarray, OptimizeResult, str | None, str | None]:
    """The full fit, or the nested law without a term flat over the sweep unless the full law fits
    clearly better (module docstring): (params, scipy result, the dropped term or None, why)."""
    u, v = axes
    flat = _flat_term(solved.x, float(u.max() / u.min()), float(v.max() / v.min()))
    if flat is None:
        return solved.x, solved, None, None
    nested, nested_solved = _fit_without(residual, solved.x, flat, bounds)
    ssr_full, ssr_nested = float(solved.fun @ solved.fun), float(nested_solved.fun @ nested_solved.fun)
    if points * np.log(max(ssr_nested, 1e-300) / max(ssr_full, 1e-300)) > FLAT_TERM_LR:
        return solved.x, solved, None, None  # the flat-looking term follows a real trend: keep it
    _, _, axis, exponent = TERMS[flat]
    why = (
        f"{flat} = 0: the {axis} term was flat over the sweep ({exponent} fitted near 0: a level not separable "
        f"from E), and the law without it fits about as well (SSR {ssr_full:.4g} -> {ssr_nested:.4g})"
    )
    return nested, nested_solved, flat, why


def _fit_without(
    residual: Callable[[np.ndarray], np.ndarray],
    params: np.ndarray,
    flat: str,
    bounds: tuple[list[float], list[float]],
) -> tuple[np.ndarray, OptimizeResult]:
    """The nested law's least squares with term ``flat`` (a key of TERMS) held at 0: returns all five
    parameters (the flat term's coefficient and exponent 0) and scipy's result on the other three."""
    from scipy.optimize import least_squares

    coefficient, exponent, _, _ = TERMS[flat]
    keep = [i for i in range(len(PARAMS_2D)) if i not in (coefficient, exponent)]
    fixed = np.array(params, dtype=float)
    fixed[0] += fixed[coefficient]  # start E at the level the flat term held
    fixed[[coefficient, exponent]] = 0.0

    def nested(q: np.ndarray) -> np.ndarray:
        full = fixed.copy()
        full[keep] = q
        return residual(full)

    low, high = [bounds[0][i] for i in keep], [bounds[1][i] for i in keep]
    solved = least_squares(nested, np.clip(fixed[keep], low, high), bounds=(low, high), method="trf")
    fixed[keep] = solved.x
    return fixed, solved


def _flat_term(params: np.ndarray, n_range: float, d_range: float) -> str | None:
    """``"A"`` or ``"B"`` when that term (non-zero) changes by less than FLAT_TERM_SHARE of its value
    across the sweep's range of its axis (``n_range = N_max / N_min``), else None; the flatter one when
    both are."""
    ranges = {"A": n_range, "B": d_range}
    change = {term: 1.0 - ranges[term] ** -params[TERMS[term][1]] for term in TERMS}
    flat = {term: c for term, c in change.items() if c < FLAT_TERM_SHARE and params[TERMS[term][0]] > 0}
    return min(flat, key=lambda term: flat[term]) if flat else None


def _errors(jac: np.ndarray, residual: np.ndarray, points: int, named: dict[int, str]) -> dict[str, float | None]:
    """1-sigma errors of the parameters ``named`` (``jac``'s column -> name): ``sqrt(diag(inv(J^T J)) *
    s^2)``, ``s^2`` the residual variance over ``points`` minus the fitted parameters (relative weights, as
    curve_fit's ``absolute_sigma=False``); None where ``J^T J`` is singular (a parameter at its bound 0
    leaves its partner undetermined)."""
    variance = float(residual @ residual) / max(points - jac.shape[1], 1)
    try:
        diag = np.diag(np.linalg.inv(jac.T @ jac)) * variance
    except np.linalg.LinAlgError:
        diag = np.full(jac.shape[1], -1.0)
    return {f"{name}_err": float(np.sqrt(diag[i])) if diag[i] >= 0 else None for i, name in named.items()}


def law_2d_value(fit: dict[str, Any], n: np.ndarray | float, d: np.ndarray | float) -> Any:
    """The fitted ``L(N, D)`` at ``(n, d)`` (evaluated on the fit's scales)."""
    u = np.asarray(n, dtype=float) / fit["n_scale"]
    v = np.asarray(d, dtype=float) / fit["d_scale"]
    return fit["E"] + fit["A_scaled"] * u ** -fit["alpha"] + fit["B_scaled"] * v ** -fit["beta"]


def bootstrap_law_2d(
    n: np.ndarray,
    d: np.ndarray,
    runs: Sequence[np.ndarray],
    sigma: np.ndarray | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile intervals of E, A, alpha, B, beta by bootstrap over points and seeds
    (:func:`terarec.launch.scaling_fit.bootstrap_intervals`); each resample is refined from the
    full fit (no grid: bounded cost), and one that draws fewer than 3 distinct sizes on an axis is
    not fitted. ``sigma`` stays each drawn point's weight. When the full data cannot be fitted: no
    resamples, ``converged`` 0 and the fit's ``note``."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    sigma = usable_sigma(sigma)
    full = fit_law_2d(n, d, np.array([np.mean(r) for r in runs]), sigma)
    if not full["fitted"]:
        return {"resamples": 0, "seed": seed, "converged": 0.0, "params": {}, "note": full["note"]}

    reduced: list[bool] = []
    # a reduced law has a zero exponent, where its term's gradient vanishes: refine from the grid instead
    start = None if "reduced" in full else full

    def refit(indices: np.ndarray, losses: np.ndarray) -> dict[str, Any] | None:
        drawn_sigma = None if sigma is None else sigma[indices]
        fit = fit_law_2d(n[indices], d[indices], losses, drawn_sigma, start=start)
        if fit["fitted"]:
            reduced.append("reduced" in fit)
        return fit if fit["fitted"] else None

    result = bootstrap_intervals(runs, refit, PARAMS_2D, resamples, seed)
    result["reduced_share"] = float(np.mean(reduced)) if reduced else None  # resamples fitted without a term
    return result


def per_data_size_fits(
    compute: np.ndarray, d: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """One ``L(C) = a C^-b + c`` (:func:`fit_power_law`) per data size, in increasing ``d``, with the
    holdout test of its largest point from 3 distinct computes on; a data size with fewer than 2
    distinct computes gets a ``note`` instead of a fit."""
    compute, d, y = (np.asarray(a, dtype=float) for a in (compute, d, y))
    std = None if sigma is None else np.asarray(sigma, dtype=float)
    fits = []
    for rows in sorted(set(d.tolist())):
        mask = d == rows
        entry: dict[str, Any] = {"train_rows": rows, "points": int(mask.sum())}
        if len(set(compute[mask].tolist())) < 2:
            entry["note"] = "fewer than 2 distinct computes at this data size: nothing to fit"
        else:
            x, at_sigma = compute[mask], None if std is None else std[mask]
            entry["fit"] = fit_power_law(x, y[mask], at_sigma)
            distinct = len(set(x.tolist()))
            entry["holdout"] = holdout_test(x, y[mask], at_sigma) if distinct >= 3 and distinct == len(x) else None
        fits.append(entry)
    return fits


def points_frontier(
    compute: np.ndarray, y: np.ndarray, n: np.ndarray | None = None, d: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """The compute-optimal frontier of the measured points: in increasing compute, each point whose
    loss is below that of every point of smaller or equal compute (the lowest loss reached so far;
    computes equal to 1e-9 relative count as equal), with its ``n`` and ``d`` when given."""
    compute, y = np.asarray(compute, dtype=float), np.asarray(y, dtype=float)
    frontier: list[dict[str, Any]] = []
    best = np.inf
    for i in np.lexsort((y, compute)):  # by compute, the lower loss first among equal computes
        if y[i] < best:
            best = float(y[i])
            if frontier and np.isclose(compute[i], frontier[-1]["compute"], rtol=1e-9, atol=0.0):
                frontier.pop()  # the same compute up to rounding (N D products): keep the lower loss only
            entry: dict[str, Any] = {"compute": float(compute[i]), "loss": best}
            if n is not None and d is not None:
                entry.update(N=float(n[i]), D=float(d[i]))
            frontier.append(entry)
    return frontier


def law_frontier(
    fit: dict[str, Any],
    computes: np.ndarray,
    compute_per_nd: float = 1.0,
    n_range: tuple[float, float] | None = None,
    d_range: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """The fitted law's compute-optimal ``(N, D)`` at each compute ``C = compute_per_nd * N * D``
    (1 with ``N`` = training FLOPs/example and one epoch; 6 with ``N`` = parameters, the usual
    ``6 N D``). Minimising ``E + A N^-alpha + B (k N / C)^beta`` over ``N`` gives (Hoffmann et al.
    2022, eq. 4) ``N* = (alpha A / (beta B))^(1/(alpha+beta)) (C/k)^(beta/(alpha+beta))`` and
    ``D* = C / (k N*)``. Each entry: compute, N, D, loss and, with the sweep's ranges given,
    ``extrapolated`` (N* or D* outside them). Empty when a term of the law vanished (A, B or an
    exponent at 0: then the optimum runs off to the end of an axis and there is no frontier)."""
    alpha, beta, a, b = fit["alpha"], fit["beta"], fit["A"], fit["B"]
    if min(alpha, beta, a, b) <= 0:
        return []
    frontier = []
    for compute in np.asarray(computes, dtype=float):
        n_opt = (alpha * a / (beta * b)) ** (1 / (alpha + beta)) * (compute / compute_per_nd) ** (beta / (alpha + beta))
        d_opt = compute / (compute_per_nd * n_opt)
        entry = {"compute": float(compute), "N": float(n_opt), "D": float(d_opt)}
        entry["loss"] = float(law_2d_value(fit, n_opt, d_opt))
        if n_range is not None and d_range is not None:
            inside = n_range[0] <= n_opt <= n_range[1] and d_range[0] <= d_opt <= d_range[1]
            entry["extrapolated"] = not inside
        frontier.append(entry)
    return frontier


def _gain_per_doubling(along: np.ndarray, y: np.ndarray) -> float | None:
    """Loss lowered per doubling between the two largest values of ``along`` (points on one line), or
    None with fewer than two."""
    order = np.argsort(along, kind="stable")
    if len(set(along.tolist())) < 2:
        return None
    last, previous = order[-1], order[-2]
    return float((y[previous] - y[last]) / np.log2(along[last] / along[previous]))


def data_limit_verdict(
    n: np.ndarray, d: np.ndarray, y: np.ndarray, fit: dict[str, Any] | None = None, metric: str = "logloss"
) -> dict[str, Any]:
    """Is the sweep data-limited? At the largest model and data size, the loss gained by doubling the
    training rows against that gained by doubling the model: from the fitted ``L(N, D)`` when it is
    fitted with both terms (``B D^-beta (1 - 2^-beta)`` against ``A N^-alpha (1 - 2^-alpha)``; a
    ``reduced`` law dropped one axis, so it cannot weigh it), else from the points
    (per doubling between the two largest data sizes at the largest model, and between the two
    largest models at the largest data size). Returns ``data_limited`` (None when it cannot tell),
    both gains, their ``source`` and ``verdict``: one line for the log and fit.json."""
    n, d, y = (np.asarray(a, dtype=float) for a in (n, d, y))
    n_max, d_max = float(n.max()), float(d.max())
    gain_data: float | None
    gain_model: float | None
    if fit is not None and fit.get("fitted") and "reduced" not in fit:  # a reduced law knows one axis only
        corner = float(law_2d_value(fit, n_max, d_max))
        gain_data = corner - float(law_2d_value(fit, n_max, 2 * d_max))
        gain_model = corner - float(law_2d_value(fit, 2 * n_max, d_max))
        source = "fitted L(N, D)"
    else:
        at_n, at_d = n == n_max, d == d_max
        gain_data, gain_model = _gain_per_doubling(d[at_n], y[at_n]), _gain_per_doubling(n[at_d], y[at_d])
        source = "points"
    result: dict[str, Any] = {"gain_more_data": gain_data, "gain_more_model": gain_model, "source": source}
    if gain_data is None or gain_model is None:
        result["data_limited"] = None
        result["verdict"] = (
            "cannot tell whether data-limited: the largest model needs 2 data sizes and the largest data size 2 models"
        )
        return result
    result["data_limited"] = gain_data > gain_model
    where = f"at the largest model ({n_max:.3g}) and data size ({d_max:.3g} rows), from the {source}"
    gains = f"doubling the rows lowers {metric} by {gain_data:.4g}, doubling the model by {gain_model:.4g}"
    if result["data_limited"]:
        result["verdict"] = f"data-limited: {where}, {gains}: more data helps more than a larger model"
    else:
        result["verdict"] = f"not data-limited: {where}, {gains}: a larger model helps at least as much as more data"
    return result


def holdout_test_2d(
    n: np.ndarray,
    d: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray | None = None,
    compute: np.ndarray | None = None,
    held_out: int = 1,
) -> dict[str, Any]:
    """Prediction, not description, on both axes: fit ``L(N, D)`` on all but the ``held_out``
    points of largest compute (``compute``; ``n * d`` when not given), predict those.

    Returns each held-out point (``N``, ``D``, compute, observed, predicted, ``abs_error``,
    ``rel_error = abs_error / observed``), the errors of the largest-compute one at the top level
    (as :func:`terarec.launch.scaling_fit.holdout_test`), ``loss_drop`` (loss at the smallest compute
    minus at the largest) and ``error_vs_loss_drop`` (None when the loss does not drop),
    ``points_fitted`` and the fit's parameters; when the rest cannot be fitted, a ``note`` instead.
    """
    n, d, y = (np.asarray(a, dtype=float) for a in (n, d, y))
    compute = n * d if compute is None else np.asarray(compute, dtype=float)
    order = np.argsort(compute, kind="stable")
    keep, out = order[:-held_out], order[-held_out:]
    std = usable_sigma(sigma)
    fit = fit_law_2d(n[keep], d[keep], y[keep], None if std is None else std[keep])
    result: dict[str, Any] = {"points_fitted": len(keep), "held_out": []}
    if not fit["fitted"]:
        result["note"] = fit["note"]
        return result
    for i in out:
        predicted = float(law_2d_value(fit, n[i], d[i]))
        error = abs(predicted - float(y[i]))
        result["held_out"].append(
            {"N": float(n[i]), "D": float(d[i]), "compute": float(compute[i]), "observed": float(y[i])}
            | {"predicted": predicted, "abs_error": error, "rel_error": error / abs(float(y[i]))}
        )
    largest = result["held_out"][-1]
    drop = float(y[order[0]] - y[order[-1]])
    result.update(abs_error=largest["abs_error"], rel_error=largest["rel_error"], loss_drop=drop)
    result["error_vs_loss_drop"] = largest["abs_error"] / drop if drop > 0 else None
    result["fit"] = {k: fit[k] for k in ("form", *PARAMS_2D, "reduced") if k in fit}
    return result


AXES_2D = {"N": "train_flops_per_example", "D": "train_rows", "C": "train_compute"}
FRONTIER_STEPS = 9  # computes at which the law's frontier is evaluated, log-spaced over the sweep's range


def two_axis_summary(
    points: list[dict[str, Any]],
    runs: dict[str, np.ndarray],
    metric: str = "logloss",
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """fit.json's two-axis keys for a sweep whose points carry ``train_rows``: ``fit_2d`` (the law with
    ``N`` = training FLOPs/example and ``D`` = training rows, its bootstrap ``intervals`` and
    ``holdout``), ``per_data_size`` L(C) fits, ``frontier`` (``points``: the measured one; ``law``: the
    fitted law's, at ``C = epochs * N * D``, epochs being the sweep's median ``train_compute / (N D)``),
    ``verdict`` (one line) and ``data_limit`` (its numbers). ``runs``: each point's per-seed losses."""
    having = [p for p in points if all(p.get(k) not in (None, "") for k in AXES_2D.values())]
    having = [p for p in having if p.get(f"{metric}_mean") is not None]
    n, d, c = (np.array([float(p[key]) for p in having]) for key in AXES_2D.values())
    y = np.array([float(p[f"{metric}_mean"]) for p in having])
    std = np.array([np.nan if p.get(f"{metric}_std") is None else float(p[f"{metric}_std"]) for p in having])
    sigma = usable_sigma(std)
    fit = fit_law_2d(n, d, y, sigma)
    fit["axes"] = {"N": AXES_2D["N"], "D": AXES_2D["D"]}
    frontier: dict[str, Any] = {"points": points_frontier(c, y, n, d), "law": []}
    if fit["fitted"]:
        point_runs = [runs.get(str(p["point"]), np.array([float(p[f"{metric}_mean"])])) for p in having]
        fit["intervals"] = bootstrap_law_2d(n, d, point_runs, sigma, resamples)
        fit["holdout"] = holdout_test_2d(n, d, y, sigma, compute=c)
        epochs = float(np.median(c / (n * d)))
        computes = np.geomspace(c.min(), c.max(), FRONTIER_STEPS)
        ranges = ((float(n.min()), float(n.max())), (float(d.min()), float(d.max())))
        frontier["law"] = law_frontier(fit, computes, epochs, *ranges)
    verdict = data_limit_verdict(n, d, y, fit, metric) if len(y) else {"verdict": "no points with train_rows"}
    return {
        "fit_2d": fit,
        "per_data_size": per_data_size_fits(c, d, y, sigma),
        "frontier": frontier,
        "verdict": verdict["verdict"],
        "data_limit": verdict,
    }


def runs_short_of_their_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Runs that trained fewer samples than one pass over their ``train_rows`` (cut by a step or time limit)."""
    short = []
    for row in rows:
        if row.get("samples") not in (None, "") and row.get("train_rows") not in (None, ""):
            if int(row["samples"]) < int(row["train_rows"]):
                short.append(f"{row['point']}: {int(row['samples']):,} of {int(row['train_rows']):,}")
    return short
