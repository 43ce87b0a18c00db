"""Applying a fitted post-hoc calibrator to logits: the one definition eval, predict and an export use.

``terarec calibrate`` (``trainer/calibration.py``) fits the calibrator; this module only applies it, so an
export can carry one without the trainer. A calibrator is a plain dict, as ``RUN/calibration.json`` stores it:

- ``temperature``: logit / T;
- ``platt``: slope * logit + intercept;
- ``isotonic``: a non-decreasing piecewise-linear map of the probability through breakpoints ``x`` -> ``y``
  (``np.interp`` semantics, end values outside them), clipped to [EPS, 1 - EPS] since it can reach 0 and 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from terarec.configs.arguments import CALIBRATION_METHODS
from terarec.errors import UserError

EPS = 1e-7


# each method's parameters as a stored calibrator names them: what check_calibrator requires and the fit writes
METHOD_PARAMETERS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "platt": ("slope", "intercept"),
    "isotonic": ("x", "y"),
}


def calibrate_logits(calibrator: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
    """The logits of the calibrated probabilities (float64, same shape and device as ``logits``)."""
    z = logits.double()
    method = calibrator["method"]
    if method == "temperature":
        return z / float(calibrator["temperature"])
    if method == "platt":
        return z * float(calibrator["slope"]) + float(calibrator["intercept"])
    if method == "isotonic":
        xs = torch.tensor(calibrator["x"], dtype=torch.float64, device=z.device)
        ys = torch.tensor(calibrator["y"], dtype=torch.float64, device=z.device)
        p = _interp(torch.sigmoid(z), xs, ys).clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)
    raise UserError(f"calibration method {method!r} unknown (one of {', '.join(CALIBRATION_METHODS)})")


def calibrator_of(method: str, **parameters: Any) -> dict[str, Any]:
    """A stored calibrator: ``method`` with exactly its :data:`METHOD_PARAMETERS` (what the fit returns)."""
    return {"method": method, **{name: parameters[name] for name in METHOD_PARAMETERS[method]}}


def check_calibrator(calibrator: Any) -> str | None:
    """What is wrong with ``calibrator`` (a stored dict), or None when :func:`calibrate_logits` can apply it:
    its method's parameters present, finite numbers (a positive temperature), isotonic breakpoints as two
    equally long, non-empty lists with ``x`` sorted."""
    if not isinstance(calibrator, dict) or calibrator.get("method") not in METHOD_PARAMETERS:
        return f"calibrator {calibrator!r} has no method among {', '.join(CALIBRATION_METHODS)}"
    method = calibrator["method"]
    missing = [key for key in METHOD_PARAMETERS[method] if key not in calibrator]
    if missing:
        return f"{method} calibrator has no '{missing[0]}'"
    if method == "isotonic":
        xs, ys = calibrator["x"], calibrator["y"]
        if not (isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys)):
            return "isotonic calibrator's 'x' and 'y' must be non-empty lists of equal length"
        if not all(_finite(v) for v in xs + ys) or any(b < a for a, b in zip(xs, xs[1:])):
            return "isotonic calibrator's 'x' and 'y' must be finite numbers, 'x' sorted"
        return None
    bad = [key for key in METHOD_PARAMETERS[method] if not _finite(calibrator[key])]
    if bad:
        return f"{method} calibrator's '{bad[0]}' is {calibrator[bad[0]]!r}, not a finite number"
    if method == "temperature" and calibrator["temperature"] <= 0:
        return f"temperature calibrator's 'temperature' is {calibrator['temperature']!r}, not > 0"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``np.interp(x, xs, ys)`` in torch: linear between breakpoints, the end values outside them."""
    if len(xs) == 1:
        return ys[0].expand_as(x).clone()
    right = torch.searchsorted(xs, x.contiguous()).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
    weight = ((x - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0.0, 1.0)
    return y0 + weight * (y1 - y0)
