"""``terarec sweep``: a grid of training runs and a scaling-law fit over their results.

A sweep YAML names a base recipe and a grid; every point of the grid is one run::

    base: wukong_synth
    grid:
      model.num_layers: [1, 2, 4, 8]
    overrides: [train.max_steps=200]   # optional, applied to every point
    nproc: 1                           # processes per run (torchrun when > 1)

Each point runs in its own process (a crash stays in its point) under ``SWEEP/points/NAME``;
points whose ``metrics.json`` exists are skipped on a re-run. Results go to ``SWEEP/results.csv``;
a power law ``L(C) = a * C^-b + c`` (scipy; the pure ``a * C^-b`` below 4 points) is fitted
against forward FLOPs per example and against dense parameters into ``SWEEP/fit.json``, drawn in ``SWEEP/scaling.png``
and logged to TensorBoard (``SWEEP/tb``): scaling curves whose step is the x value
(``scaling/logloss_vs_flops_per_example``) or ``1000 * log10`` of it (``..._vs_log10_flops_per_example_x1000``;
steps are integers), and one hparams entry per point.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from terarec.configs.loader import ConfigError, load_config
from terarec.launch.torchrun import run_child, trainer_command

log = logging.getLogger("terarec")


class SweepError(RuntimeError):
    """A point's training failed: the message names the point and its log file."""


SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
RESULT_KEYS = [
    "auc",
    "logloss",
    "ne",
    "params_dense",
    "params_sparse",
    "flops_per_example",
    "samples",
    "steps",
    "wall_s",
]
NO_SCALING = (
    "the loss does not fall with C over this range (b at its bound 0 or a rising log-log slope): no power law "
    "to fit, and the parameter errors are not meaningful; train on more data or over a wider range of C"
)
FIT_AXES = {"flops_per_example": "forward FLOPs / example", "params_dense": "dense parameters"}


@dataclass
class SweepSpec:
    base: str
    grid: dict[str, list[Any]]
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1

    @classmethod
    def load(cls, path: str, extra: list[str]) -> SweepSpec:
        file = Path(path)
        if not file.is_file() and (SHIPPED / f"{path}.yaml").is_file():  # a shipped sweep by name
            file = SHIPPED / f"{path}.yaml"
        if not file.is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
            raise ConfigError(f"sweep file {path} not found (shipped sweeps: {shipped})")
        raw = yaml.safe_load(file.read_text()) or {}
        unknown = sorted(set(raw) - {"base", "grid", "overrides", "nproc"})
        if unknown:
            raise ConfigError(f"{path}: unknown sweep key '{unknown[0]}' (valid: base, grid, overrides, nproc)")
        if "base" not in raw or not isinstance(raw.get("grid"), dict) or not raw["grid"]:
            raise ConfigError(f"{path}: a sweep needs 'base' (a recipe) and a non-empty 'grid' of key: [values]")
        grid = {str(k): v if isinstance(v, list) else [v] for k, v in raw["grid"].items()}
        spec = cls(str(raw["base"]), grid, [*map(str, raw.get("overrides") or []), *extra], int(raw.get("nproc", 1)))
        for point in spec.points():  # every point's config is checked before anything runs
            load_config(spec.base, spec.point_overrides(point))
        return spec

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def point_overrides(self, point: dict[str, Any]) -> list[str]:
        return [*self.overrides, *(f"{k}={v}" for k, v in point.items())]


def point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()).replace("/", "_")


def run_point(
    spec: SweepSpec, point: dict[str, Any], run_dir: Path, launcher: str = "local", scheduler: str = "local_cwd"
) -> dict[str, Any]:
    """Train one point in a child process, or as a torchx job on ``scheduler``; its metrics."""
    # an unfinished point starts over: its dir may hold checkpoints of the failed attempt
    args = [
        "--config",
        spec.base,
        *spec.point_overrides(point),
        f"run.dir={run_dir}",
        "run.overwrite=true",
        "logging.progress=false",
    ]
    if launcher == "torchx":
        return _run_point_torchx(args, spec.nproc, point, run_dir, scheduler)
    code = run_child(trainer_command(args, spec.nproc), run_dir / "train.log")
    if code != 0:
        raise SweepError(f"sweep point {point_name(point)} failed (exit {code}); see {run_dir / 'train.log'}")
    return json.loads((run_dir / "metrics.json").read_text())


def _run_point_torchx(
    args: list[str], nproc: int, point: dict[str, Any], run_dir: Path, scheduler: str
) -> dict[str, Any]:
    """One point as a torchx job (the run dir must be on a filesystem this process can read),
    with the scheduler's settings from ``.torchxconfig``; waits for it to finish."""
    from torchx.runner import config as torchx_config
    from torchx.runner import get_runner
    from torchx.specs import AppState

    from terarec.launch.components import train

    cfg: dict[str, Any] = {}
    torchx_config.apply(scheduler=scheduler, cfg=cfg)
    runner = get_runner()
    handle = runner.run(train(*args, j=f"1x{nproc}", python=sys.executable), scheduler, cfg=cfg)
    status = runner.wait(handle, wait_interval=1)
    if status is None or status.state != AppState.SUCCEEDED or not (run_dir / "metrics.json").is_file():
        raise SweepError(f"sweep point {point_name(point)} failed under torchx ({status}); handle {handle}")
    return json.loads((run_dir / "metrics.json").read_text())


def fit_power_law(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``L(C) = a * C^-b + c`` (scipy ``curve_fit``; ``c`` is the irreducible loss) when there are at
    least 4 points and it converges, else the pure power law ``L = a * C^-b`` by least squares in
    log-log space. Returns the parameters, their standard errors where known, the fit's RMSE, the
    plain log-log slope, and a ``note`` when the loss does not fall with ``C`` (nothing to fit)."""
    from scipy.optimize import curve_fit

    lx, ly = np.log(x), np.log(y)
    slope, log_a = np.polyfit(lx, ly, 1)
    pure = {"form": "a*C^-b", "a": float(np.exp(log_a)), "b": float(-slope), "c": 0.0, "loglog_slope": float(slope)}
    pure["rmse"] = float(np.sqrt(np.mean((pure["a"] * x ** -pure["b"] - y) ** 2)))
    if slope >= 0:
        pure["note"] = NO_SCALING
    if len(x) < 4:
        return pure
    scale = float(x.min())  # C / C_min keeps a and b well conditioned

    def law(c: np.ndarray, a: float, b: float, floor: float) -> np.ndarray:
        return a * (c / scale) ** -b + floor

    try:
        # a, b, c >= 0: a loss that falls with compute towards a floor (b <= 3 keeps the search sane)
        params, cov = curve_fit(
            law,
            x,
            y,
            p0=(float(y.max() - y.min()) or 1e-3, 0.1, float(y.min()) * 0.9),
            bounds=([0.0, 0.0, 0.0], [np.inf, 3.0, np.inf]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError):
        return pure
    a, b, c = (float(v) for v in params)
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(3, np.nan)
    fit = {
        "form": "a*C^-b+c",
        "a": a * scale**b,
        "b": b,
        "c": c,
        "a_err": float(errors[0] * scale**b),
        "b_err": float(errors[1]),
        "c_err": float(errors[2]),
        "rmse": float(np.sqrt(np.mean((law(x, a, b, c) - y) ** 2))),
        "loglog_slope": float(slope),
    }
    if b < 1e-3 or slope >= 0:  # b at its bound: the errors above come from a degenerate covariance
        fit["note"] = NO_SCALING
    return fit


def _log_hparams(writer: Any, rows: list[dict[str, Any]]) -> None:
    """One TensorBoard hparams entry per point (HPARAMS tab: the grid keys, sizes and final metrics)."""
    for row in rows:
        params = {k: v for k, v in row.items() if k not in RESULT_KEYS and isinstance(v, (int, float, str, bool))}
        params.update({k: float(row[k]) for k in ("flops_per_example", "params_dense")})
        params["log10_flops_per_example"] = float(np.log10(float(row["flops_per_example"])))
        metrics = {f"hparam/{k}": float(row[k]) for k in ("logloss", "auc", "ne") if row.get(k) is not None}
        writer.add_hparams(params, metrics, run_name=f"hparams/{row['point']}")


def summarize(rows: list[dict[str, Any]], output: Path, metric: str = "logloss") -> dict[str, Any]:
    """results -> fit.json, scaling.png, TensorBoard scaling curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    fits: dict[str, Any] = {}
    figure, axes = plt.subplots(1, len(FIT_AXES), figsize=(6 * len(FIT_AXES), 4.5))
    writer = SummaryWriter(str(output / "tb"))
    y = np.array([float(r[metric]) for r in rows])
    for ax, (key, label) in zip(np.atleast_1d(axes), FIT_AXES.items()):
        x = np.array([float(r[key]) for r in rows])
        for xi, yi in sorted(zip(x, y)):
            writer.add_scalar(f"scaling/{metric}_vs_{key}", yi, global_step=int(xi))
            # TensorBoard steps are integers: the log-x curve's step is 1000 * log10(x)
            writer.add_scalar(f"scaling/{metric}_vs_log10_{key}_x1000", yi, global_step=round(1000 * np.log10(xi)))
        ax.scatter(x, y, label="runs")
        if len(set(x)) >= 2 and (y > 0).all():
            fit = fits[key] = fit_power_law(x, y)
            grid = np.geomspace(x.min(), x.max(), 50)
            legend = f"{fit['a']:.3g} C^-{fit['b']:.3f} + {fit['c']:.3g} (rmse {fit['rmse']:.2g})"
            if "note" in fit:
                legend = f"no power law: loss does not fall with C (log-log slope {fit['loglog_slope']:+.4f})"
            ax.plot(grid, fit["a"] * grid ** -fit["b"] + fit["c"], label=legend)
        ax.set(xscale="log", xlabel=label, ylabel=f"eval {metric}")
        ax.legend()
    _log_hparams(writer, rows)
    writer.close()
    figure.tight_layout()
    figure.savefig(output / "scaling.png", dpi=120)
    plt.close(figure)
    (output / "fit.json").write_text(json.dumps({"metric": metric, "fits": fits, "points": len(rows)}, indent=2) + "\n")
    return fits


def run_sweep(
    spec: SweepSpec, output: Path, launcher: str = "local", scheduler: str = "local_cwd"
) -> list[dict[str, Any]]:
    """Every point in turn (finished ones are read back, not re-run), then the results and fits."""
    rows: list[dict[str, Any]] = []
    points = spec.points()
    for index, point in enumerate(points, 1):
        run_dir = output / "points" / point_name(point)
        if (run_dir / "metrics.json").is_file():
            log.info("[%d/%d] %s: done earlier, skipped", index, len(points), point_name(point))
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            log.info("[%d/%d] %s: training", index, len(points), point_name(point))
            metrics = run_point(spec, point, run_dir, launcher, scheduler)
        rows.append({"point": point_name(point), **point, **{k: metrics.get(k) for k in RESULT_KEYS}})
        log.info(
            "[%d/%d] %s: logloss %.5f auc %.4f, %s FLOPs/example",
            index,
            len(points),
            point_name(point),
            metrics["logloss"],
            metrics["auc"],
            f"{metrics['flops_per_example']:,}",
        )
    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summarize(rows, output)
    return rows
