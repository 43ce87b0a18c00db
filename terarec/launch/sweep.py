"""``terarec sweep``: a grid of training runs and a scaling-law fit over their results.

A sweep YAML names a base recipe and a grid; every point of the grid is one run::

    base: wukong_synth
    grid:
      model.num_layers: [1, 2, 4, 8]
    overrides: [train.max_steps=200]   # optional, applied to every point
    nproc: 1                           # processes per run (torchrun when > 1)

Each point runs in its own process (a crash stays in its point) under ``SWEEP/points/NAME``.
On a re-run a finished point is skipped only when its resolved config and its dataset's fingerprint
are the ones it would run with now (``terarec.launch.reuse``); every point is checked before any
runs, and changed ones stop the sweep (``--on-change stop``, the default) or are moved aside and
trained again (``--on-change rerun``). Results go to ``SWEEP/results.csv``,
with each point's training compute ``train_compute = train_flops_per_example * samples`` (training
FLOPs: forward + backward, 3 x forward, see ``terarec.models.common``). A power law
``L(C) = a * C^-b + c`` (scipy; the pure ``a * C^-b`` below 4 points) is fitted against training
compute and against dense parameters into ``SWEEP/fit.json``, with a holdout test per axis: the
law fitted on all but the largest point predicts that point, and the absolute and relative errors
are recorded. All of it is drawn in ``SWEEP/scaling.png`` and logged to TensorBoard (``SWEEP/tb``):
scaling curves whose step is the x value (``scaling/logloss_vs_flops_per_example``,
``..._vs_params_dense``; training compute in GFLOP: ``..._vs_train_compute_gflop``, which keeps
cluster-sized compute inside an integer step) or ``1000 * log10`` of it
(``..._vs_log10_train_compute_x1000``; steps are integers), and one hparams entry per point.
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

from terarec.configs.loader import ConfigError, config_to_dict, load_config, read_yaml
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.errors import RunFailedError, UserError
from terarec.launch.reuse import Identity, Planned, decide, make_room, move_aside, stop_on_changes
from terarec.launch.torchrun import child_user_error, run_child, trainer_command

log = logging.getLogger("terarec")


class SweepError(RunFailedError):
    """A point's training failed (not a user error): the message names the point and its log file."""


SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
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
]
NO_SCALING = (
    "the loss does not fall with C over this range (b at its bound 0 or a rising log-log slope): no power law "
    "to fit, and the parameter errors are not meaningful; train on more data or over a wider range of C"
)
FIT_AXES = {"train_compute": "training compute (FLOPs)", "params_dense": "dense parameters"}
# TensorBoard curves: the fitted axes and forward FLOPs/example; x -> step divisor (GFLOP for compute,
# whose raw FLOPs overflow an int64 step at cluster scale)
CURVE_UNITS = {"train_compute": ("train_compute_gflop", 1e9), "params_dense": ("params_dense", 1.0)}
CURVE_UNITS["flops_per_example"] = ("flops_per_example", 1.0)
NO_COMPUTE = (
    "points without train_flops_per_example (trained before it was recorded) are left out of this axis: "
    "re-run them to include them"
)


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
        spec = cls.parse(read_yaml(file, holds="sweep keys (base, grid, overrides, nproc)"), str(file), extra)
        for point in spec.points():  # every point's config is checked before anything runs
            load_config(spec.base, spec.point_overrides(point))
        return spec

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str, extra: list[str]) -> SweepSpec:
        """A sweep file's mapping, checked key by key: every mistake is a ConfigError naming the file and key."""
        unknown = sorted(set(raw) - {"base", "grid", "overrides", "nproc"})
        if unknown:
            raise ConfigError(f"{path}: unknown sweep key '{unknown[0]}' (valid: base, grid, overrides, nproc)")
        if not isinstance(raw.get("base"), str) or not isinstance(raw.get("grid"), dict) or not raw["grid"]:
            raise ConfigError(f"{path}: a sweep needs 'base' (a recipe) and a non-empty 'grid' of key: [values]")
        for key, values in raw["grid"].items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: grid key '{key}' must be a non-empty list of values, got {values!r}")
        overrides = raw.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"{path}: 'overrides' must be a list of key=value strings, got {overrides!r}")
        nproc = raw.get("nproc", 1)
        if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
            raise ConfigError(f"{path}: 'nproc' must be an integer >= 1, got {nproc!r}")
        grid = {str(k): list(v) for k, v in raw["grid"].items()}
        return cls(raw["base"], grid, [*overrides, *extra], nproc)

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def point_overrides(self, point: dict[str, Any]) -> list[str]:
        return [*self.overrides, *(f"{k}={v}" for k, v in point.items())]


def point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()).replace("/", "_")


def run_overrides(spec: SweepSpec, point: dict[str, Any], run_dir: Path) -> list[str]:
    """Everything a point's training is given besides its recipe: what its identity is resolved from."""
    return [*spec.point_overrides(point), f"run.dir={run_dir}", "logging.progress=false"]


def run_point(
    spec: SweepSpec,
    point: dict[str, Any],
    run_dir: Path,
    launcher: str = "local",
    scheduler: str = "local_cwd",
    resume: bool = False,
) -> dict[str, Any]:
    """Train one point in a child process, or as a torchx job on ``scheduler``; its metrics.
    ``resume``: continue an unfinished run dir of the same config (``resume=auto``)."""
    args = ["--config", spec.base, *run_overrides(spec, point, run_dir), *(["resume=auto"] if resume else [])]
    if launcher == "torchx":
        return _run_point_torchx(args, spec.nproc, point, run_dir, scheduler)
    log_file = run_dir / "train.log"
    code = run_child(trainer_command(args, spec.nproc), log_file)
    if code != 0:
        mistake = child_user_error(log_file)
        if mistake is not None:
            raise UserError(f"sweep point {point_name(point)}: {mistake} (log: {log_file})")
        raise SweepError(f"sweep point {point_name(point)} failed (exit {code}); see {log_file}")
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
    pure: dict[str, Any] = {
        "form": "a*C^-b",
        "a": float(np.exp(log_a)),
        "b": float(-slope),
        "c": 0.0,
        "loglog_slope": float(slope),
    }
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


def law_value(fit: dict[str, Any], x: np.ndarray | float) -> Any:
    """The fitted law ``a * x^-b + c`` at ``x``."""
    return fit["a"] * np.asarray(x, dtype=float) ** -fit["b"] + fit["c"]


def holdout_test(x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """Prediction, not description: fit on every point but the one of largest ``x``, predict it.

    Returns the held-out point, the prediction, ``abs_error = |predicted - observed|``,
    ``rel_error = abs_error / observed``, and the error as a fraction of the loss drop across the
    sweep (smallest-x loss minus largest-x loss; None when the loss does not drop). None below 3
    points (the fit on the others needs 2). The law is :func:`fit_power_law`'s, so with fewer than
    4 points left it is the pure power law.
    """
    if len(x) < 3:
        return None
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    fit = fit_power_law(x[:-1], y[:-1])
    predicted, observed = float(law_value(fit, x[-1])), float(y[-1])
    abs_error, drop = abs(predicted - observed), float(y[0] - y[-1])
    return {
        "held_out_x": float(x[-1]),
        "observed": observed,
        "predicted": predicted,
        "abs_error": abs_error,
        "rel_error": abs_error / abs(observed),
        "loss_drop": drop,
        "error_vs_loss_drop": abs_error / drop if drop > 0 else None,
        "points_fitted": len(x) - 1,
        "fit": {k: fit[k] for k in ("form", "a", "b", "c")},
    }


def _log_hparams(writer: Any, rows: list[dict[str, Any]]) -> None:
    """One TensorBoard hparams entry per point (HPARAMS tab: the grid keys, sizes and final metrics)."""
    for row in rows:
        params = {k: v for k, v in row.items() if k not in RESULT_KEYS and isinstance(v, (int, float, str, bool))}
        params.update({k: float(row[k]) for k in ("flops_per_example", "params_dense")})
        params["log10_flops_per_example"] = float(np.log10(float(row["flops_per_example"])))
        if row.get("train_compute"):
            params["log10_train_compute"] = float(np.log10(float(row["train_compute"])))
        metrics = {f"hparam/{k}": float(row[k]) for k in ("logloss", "auc", "ne") if row.get(k) is not None}
        writer.add_hparams(params, metrics, run_name=f"hparams/{row['point']}")


def _log_curves(writer: Any, rows: list[dict[str, Any]], metric: str) -> None:
    """Scaling curves: step = x (in the axis' unit) and step = 1000 * log10(x), steps being integers."""
    for key, (name, unit) in CURVE_UNITS.items():
        points = sorted((float(r[key]), float(r[metric])) for r in rows if r.get(key) is not None)
        for x, y in points:
            writer.add_scalar(f"scaling/{metric}_vs_{name}", y, global_step=round(x / unit))
            writer.add_scalar(f"scaling/{metric}_vs_log10_{key}_x1000", y, global_step=round(1000 * np.log10(x)))


def _fit_axis(ax: Any, rows: list[dict[str, Any]], key: str, label: str, metric: str) -> dict[str, Any] | None:
    """Fit, holdout test and plot of ``metric`` against ``key`` over the rows that have ``key``."""
    pairs = [(float(r[key]), float(r[metric])) for r in rows if r.get(key) is not None]
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    ax.scatter(x, y, label="runs")
    ax.set(xscale="log", xlabel=label, ylabel=f"eval {metric}")
    fit = None
    if len(set(x)) >= 2 and (y > 0).all():
        fit = fit_power_law(x, y)
        grid = np.geomspace(x.min(), x.max(), 50)
        legend = f"{fit['a']:.3g} C^-{fit['b']:.3f} + {fit['c']:.3g} (rmse {fit['rmse']:.2g})"
        if "note" in fit:
            legend = f"no power law: loss does not fall with C (log-log slope {fit['loglog_slope']:+.4f})"
        ax.plot(grid, law_value(fit, grid), label=legend)
        fit["holdout"] = holdout = holdout_test(x, y) if len(set(x)) == len(x) else None
        if holdout is not None:
            ax.plot(grid, law_value(holdout["fit"], grid), "--", color="gray", label="fit without the largest point")
            ax.scatter(
                [holdout["held_out_x"]],
                [holdout["predicted"]],
                marker="x",
                s=80,
                color="red",
                label=f"predicted {holdout['predicted']:.4f} vs {holdout['observed']:.4f} "
                f"({100 * holdout['rel_error']:.2f}% off)",
            )
        if len(pairs) < len(rows):
            fit["note_points"] = NO_COMPUTE
    ax.legend(fontsize="small")
    return fit


def summarize(rows: list[dict[str, Any]], output: Path, metric: str = "logloss") -> dict[str, Any]:
    """results -> fit.json (fits and holdout tests), scaling.png, TensorBoard scaling curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    fits: dict[str, Any] = {}
    figure, axes = plt.subplots(1, len(FIT_AXES), figsize=(6 * len(FIT_AXES), 4.5))
    for ax, (key, label) in zip(np.atleast_1d(axes), FIT_AXES.items()):
        fit = _fit_axis(ax, rows, key, label, metric)
        if fit is not None:
            fits[key] = fit
    writer = SummaryWriter(str(output / "tb"))
    _log_curves(writer, rows, metric)
    _log_hparams(writer, rows)
    writer.close()
    figure.tight_layout()
    figure.savefig(output / "scaling.png", dpi=120)
    plt.close(figure)
    (output / "fit.json").write_text(json.dumps({"metric": metric, "fits": fits, "points": len(rows)}, indent=2) + "\n")
    return fits


def write_results(rows: list[dict[str, Any]], output: Path) -> None:
    """Each row gets ``train_compute`` (training FLOPs/example x samples trained on; None for a point
    trained before training FLOPs were recorded), then results.csv, the fits and the plots."""
    for row in rows:
        per_example, samples = row.get("train_flops_per_example"), row.get("samples")
        row["train_compute"] = int(per_example) * int(samples) if per_example and samples else None
    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summarize(rows, output)


def plan_points(spec: SweepSpec, output: Path) -> list[Planned]:
    """Every point's run dir and whether it may be reused: its resolved config and dataset
    fingerprint against what that dir recorded (one fingerprint per dataset path)."""
    fingerprints: dict[str, str | None] = {}
    planned = []
    for point in spec.points():
        run_dir = output / "points" / point_name(point)
        cfg = load_config(spec.base, run_overrides(spec, point, run_dir))
        if cfg.data.path not in fingerprints:
            fingerprints[cfg.data.path] = dataset_fingerprint(cfg.data.path)
        now = Identity(config_to_dict(cfg), fingerprints[cfg.data.path])
        planned.append(Planned(point_name(point), run_dir, decide(run_dir, now)))
    return planned


def run_sweep(
    spec: SweepSpec, output: Path, launcher: str = "local", scheduler: str = "local_cwd", on_change: str = "stop"
) -> list[dict[str, Any]]:
    """Every point in turn (finished ones with the same config and data are read back, not re-run;
    ``on_change`` says what to do with the others, decided before anything runs), then the
    results (only points of this request) and fits."""
    rows: list[dict[str, Any]] = []
    points, planned = spec.points(), plan_points(spec, output)
    stop_on_changes(planned, on_change, "sweep point")
    if any(p.decision.action == "changed" for p in planned) and (output / "results.csv").is_file():
        log.info("results.csv listed points now re-run: moved to %s", move_aside(output / "results.csv"))
    for index, (point, plan) in enumerate(zip(points, planned), 1):
        run_dir = plan.run_dir
        if plan.decision.action == "reuse":
            log.info("[%d/%d] %s: done earlier with the same config and data, skipped", index, len(points), plan.name)
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            resume = make_room(plan)
            log.info("[%d/%d] %s: training", index, len(points), plan.name)
            metrics = run_point(spec, point, run_dir, launcher, scheduler, resume)
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
    write_results(rows, output)
    return rows
