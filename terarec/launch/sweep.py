"""``terarec sweep``: a grid of training runs and a scaling-law fit over their results.

A sweep YAML names a base recipe and a grid; every point of the grid is one run::

    base: wukong_synth
    grid:
      model.num_layers: [1, 2, 4, 8]
    overrides: [train.max_steps=200]   # optional, applied to every point
    nproc: 1                           # processes per run (torchrun when > 1)
    seeds: [0, 1, 2]                   # optional: each point once per train.seed
    select: {key: optim.lr, values: [0.001, 0.003], metric: logloss}   # optional, see below

A grid of several keys is their product: ``{model.flavor: [...], data.max_train_rows: [...]}`` is the
two-axis (model size x data size) sweep. Every run records ``train_rows`` (the rows one epoch trains
on); with two or more data sizes fit.json also holds the two-axis law ``L(N, D)`` and one ``L(C)`` per
data size (below), drawn as one curve per data size in scaling.png and logged under
``scaling/..._vs_train_compute_gflop/rows_R`` (and the log10 curve).

``select`` (``terarec.launch.sweep_select``): every point trains once per value of ``key`` (under
``points/NAME,lr=V``), and the value whose run has the best validation metric (``valid_logloss`` or
``valid_auc``, never the eval split) is the point's result; results.csv lists every run with a
``selected`` column, points.csv and the fits use the chosen runs only. Runs need validation rows.

Each run (point x seed) runs in its own process (a crash stays in its run) under
``SWEEP/points/NAME`` (``.../NAME/seed_S`` with several seeds). ``results.csv`` has one row per run,
``points.csv`` one per point (mean and std over its seeds); the fits are on the means, weighted by
``1/std^2`` (``terarec.launch.scaling_fit``), and points within noise of their neighbours are
flagged (``noisy_points`` in fit.json).
On a re-run a finished point is skipped only when its resolved config and its dataset's fingerprint
are the ones it would run with now (``terarec.launch.reuse``); every point is checked before any
runs, and changed ones stop the sweep (``--on-change stop``, the default) or are moved aside and
trained again (``--on-change rerun``). Results go to ``SWEEP/results.csv``,
with each run's training compute ``train_compute = train_flops_per_example * samples`` (training
FLOPs: forward + backward, 3 x forward, see ``terarec.models.common``). A power law
``L(C) = a * C^-b + c`` (scipy; the pure ``a * C^-b`` below 4 points) is fitted against training
compute and against dense parameters into ``SWEEP/fit.json``, with a holdout test per axis: the
law fitted on all but the largest point predicts that point, and the absolute and relative errors
are recorded, and bootstrap intervals of its parameters (over points and seeds). With two or more
data sizes (``train_rows``), fit.json also holds the two-axis law ``L(N, D)`` with its intervals and
holdout, one ``L(C)`` per data size, the compute-optimal frontier and a data-limited verdict
(``terarec.launch.scaling_law2d``), drawn in a third panel. All of it is drawn in ``SWEEP/scaling.png``
and logged to TensorBoard (``SWEEP/tb``): scaling curves whose step is the x value
(``scaling/logloss_vs_flops_per_example``,
``..._vs_params_dense``; training compute in GFLOP: ``..._vs_train_compute_gflop``, which keeps
cluster-sized compute inside an integer step) or ``1000 * log10`` of it
(``..._vs_log10_train_compute_x1000``; steps are integers), and one hparams entry per run.
``terarec sweep --predict``: the finished sweep's law at a larger configuration (``terarec.launch.sweep_predict``).
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

from terarec.configs.loader import ConfigError, check_max_train_rows, config_to_dict, load_config, read_yaml
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import RunFailedError, UserError
from terarec.launch.reuse import Identity, Planned, decide, make_room, move_aside, stop_on_changes
from terarec.launch.scaling_fit import (  # noqa: F401  (fit_power_law, holdout_test: this module's API too)
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
from terarec.launch.sweep_select import Selection, check_validation_rows, mark_selected
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
    "train_rows",
    "valid_logloss",
    "valid_auc",
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


SWEEP_KEYS = ("base", "grid", "overrides", "nproc", "seeds", "select")


@dataclass
class SweepSpec:
    base: str
    grid: dict[str, list[Any]]
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1
    # None: one run per point with the recipe's train.seed (0 unless overridden), as before seeds existed
    seeds: list[int] | None = None
    select: Selection | None = None  # the LR axis: chosen per point on the validation metric

    @classmethod
    def load(cls, path: str, extra: list[str]) -> SweepSpec:
        file = Path(path)
        if not file.is_file() and (SHIPPED / f"{path}.yaml").is_file():  # a shipped sweep by name
            file = SHIPPED / f"{path}.yaml"
        if not file.is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
            raise ConfigError(f"sweep file {path} not found (shipped sweeps: {shipped})")
        spec = cls.parse(read_yaml(file, holds=f"sweep keys ({', '.join(SWEEP_KEYS)})"), str(file), extra)
        for point in spec.run_points():  # every run's config is checked before anything runs
            for seed in spec.run_seeds():
                load_config(spec.base, spec.point_overrides(point, seed))
        return spec

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str, extra: list[str]) -> SweepSpec:
        """A sweep file's mapping, checked key by key: every mistake is a ConfigError naming the file and key."""
        unknown = sorted(set(raw) - set(SWEEP_KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown sweep key '{unknown[0]}' (valid: {', '.join(SWEEP_KEYS)})")
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
        seeds = _parse_seeds(raw, path, [*overrides, *extra, *grid])
        select = Selection.parse(raw.get("select"), path, [*overrides, *extra, *grid])
        return cls(raw["base"], grid, [*overrides, *extra], nproc, seeds, select)

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def run_points(self) -> list[dict[str, Any]]:
        """What trains: each point, once per ``select`` value when there is a selection axis."""
        if self.select is None:
            return self.points()
        return [{**point, self.select.key: value} for point in self.points() for value in self.select.values]

    def point_of(self, run: dict[str, Any]) -> dict[str, Any]:
        """A run point without its ``select`` value: the point it competes for."""
        return {k: v for k, v in run.items() if self.select is None or k != self.select.key}

    def run_seeds(self) -> list[int | None]:
        """The seeds each point trains with; [None]: once, with the recipe's seed."""
        return list(self.seeds) if self.seeds is not None else [None]

    def point_overrides(self, point: dict[str, Any], seed: int | None = None) -> list[str]:
        seeded = [] if seed is None else [f"train.seed={seed}"]
        return [*self.overrides, *(f"{k}={v}" for k, v in point.items()), *seeded]


def _parse_seeds(raw: dict[str, Any], path: str, set_elsewhere: list[str]) -> list[int] | None:
    """``seeds``: a non-empty list of distinct integers >= 0, and then not also set by an override or
    the grid (which one would win is not obvious); None when absent."""
    if "seeds" not in raw:
        return None
    seeds = raw["seeds"]
    valid = isinstance(seeds, list) and bool(seeds) and all(type(s) is int and s >= 0 for s in seeds)
    if not valid or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: 'seeds' must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    if any(item == "train.seed" or item.startswith("train.seed=") for item in set_elsewhere):
        raise ConfigError(f"{path}: 'seeds' and a train.seed override or grid key both set the seed: keep one")
    return list(seeds)


def point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()).replace("/", "_")


def run_label(point: dict[str, Any], seed: int | None) -> str:
    """A run as logs and errors name it: ``num_layers=2``, or ``num_layers=2 seed 1`` with seeds."""
    return point_name(point) if seed is None else f"{point_name(point)} seed {seed}"


def run_dir_of(spec: SweepSpec, output: Path, point: dict[str, Any], seed: int | None) -> Path:
    """``SWEEP/points/NAME``, or ``.../NAME/seed_S`` when the sweep has several seeds (one seed keeps
    the seedless name, so a sweep that names one seed reuses the points it trained before)."""
    base = output / "points" / point_name(point)
    return base / f"seed_{seed}" if seed is not None and len(spec.run_seeds()) > 1 else base


def run_overrides(spec: SweepSpec, point: dict[str, Any], run_dir: Path, seed: int | None = None) -> list[str]:
    """Everything a run's training is given besides its recipe: what its identity is resolved from."""
    return [*spec.point_overrides(point, seed), f"run.dir={run_dir}", "logging.progress=false"]


def run_point(
    spec: SweepSpec,
    point: dict[str, Any],
    run_dir: Path,
    launcher: str = "local",
    scheduler: str = "local_cwd",
    resume: bool = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train one point (with ``seed``: ``train.seed``) in a child process, or as a torchx job on
    ``scheduler``; its metrics. ``resume``: continue an unfinished run dir of the same config (``resume=auto``)."""
    args = ["--config", spec.base, *run_overrides(spec, point, run_dir, seed), *(["resume=auto"] if resume else [])]
    label = run_label(point, seed)
    if launcher == "torchx":
        return _run_point_torchx(args, spec.nproc, label, run_dir, scheduler)
    log_file = run_dir / "train.log"
    code = run_child(trainer_command(args, spec.nproc), log_file)
    if code != 0:
        mistake = child_user_error(log_file)
        if mistake is not None:
            raise UserError(f"sweep point {label}: {mistake} (log: {log_file})")
        raise SweepError(f"sweep point {label} failed (exit {code}); see {log_file}")
    return json.loads((run_dir / "metrics.json").read_text())


def _run_point_torchx(args: list[str], nproc: int, label: str, run_dir: Path, scheduler: str) -> dict[str, Any]:
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
        raise SweepError(f"sweep point {label} failed under torchx ({status}); handle {handle}")
    return json.loads((run_dir / "metrics.json").read_text())


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


RUN_OWN = ("point", "seed", "logloss", "auc", "ne", "steps", "wall_s", "valid_logloss", "valid_auc", "selected")


def point_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Columns shared by a point's seeds (grid keys, sizes, compute, the chosen select value): all but
    the run's own numbers."""
    return [k for k in rows[0] if k not in RUN_OWN]


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_results(rows: list[dict[str, Any]], output: Path, selection: Selection | None = None) -> None:
    """Each row (one run) gets ``train_compute`` (training FLOPs/example x samples trained on; None
    for a run trained before training FLOPs were recorded), then results.csv (one row per run; with a
    ``selection``, a ``selected`` column), points.csv (one per point: means and stds over its seeds,
    of the chosen runs), the fits and the plots (chosen runs only)."""
    for row in rows:
        per_example, samples = row.get("train_flops_per_example"), row.get("samples")
        row["train_compute"] = int(per_example) * int(samples) if per_example and samples else None
    chosen = rows if selection is None else mark_selected(rows, selection)
    _write_csv(rows, output / "results.csv")
    _write_csv(aggregate(chosen, point_keys(chosen)), output / "points.csv")
    summarize(chosen, output)


def plan_points(spec: SweepSpec, output: Path) -> list[tuple[dict[str, Any], int | None, Planned]]:
    """Every run (point x seed), its run dir and whether it may be reused: its resolved config and
    dataset fingerprint against what that dir recorded (one fingerprint and schema per dataset path)."""
    fingerprints: dict[str, str | None] = {}
    schemas: dict[str, DatasetSchema] = {}  # loaded (and its parts checked) once per dataset, as the fingerprint
    planned = []
    for point in spec.run_points():
        for seed in spec.run_seeds():
            run_dir = run_dir_of(spec, output, point, seed)
            cfg = load_config(spec.base, run_overrides(spec, point, run_dir, seed))
            if cfg.data.path not in fingerprints:
                fingerprints[cfg.data.path] = dataset_fingerprint(cfg.data.path)
                schemas[cfg.data.path] = DatasetSchema.load(cfg.data.path)
            schema = schemas[cfg.data.path]
            try:  # a data size the data cannot give stops the sweep before any point trains
                check_max_train_rows(cfg, schema.split_rows)
            except ConfigError as err:
                raise ConfigError(f"sweep point {run_label(point, seed)}: {err}") from None
            if spec.select is not None:  # selection reads validation rows: every run must have some
                check_validation_rows(cfg, schema, run_label(point, seed), spec.select)
            now = Identity(config_to_dict(cfg), fingerprints[cfg.data.path])
            planned.append((point, seed, Planned(run_label(point, seed), run_dir, decide(run_dir, now))))
    return planned


def run_sweep(
    spec: SweepSpec, output: Path, launcher: str = "local", scheduler: str = "local_cwd", on_change: str = "stop"
) -> list[dict[str, Any]]:
    """Every run (point x seed) in turn (finished ones with the same config and data are read back,
    not re-run; ``on_change`` says what to do with the others, decided before anything runs), then
    the results (only runs of this request) and fits."""
    rows: list[dict[str, Any]] = []
    runs = plan_points(spec, output)
    stop_on_changes([plan for _, _, plan in runs], on_change, "sweep point")
    if any(plan.decision.action == "changed" for _, _, plan in runs) and (output / "results.csv").is_file():
        log.info("results.csv listed points now re-run: moved to %s", move_aside(output / "results.csv"))
    for index, (point, seed, plan) in enumerate(runs, 1):
        if plan.decision.action == "reuse":
            log.info("[%d/%d] %s: done earlier with the same config and data, skipped", index, len(runs), plan.name)
            metrics = json.loads((plan.run_dir / "metrics.json").read_text())
        else:
            resume = make_room(plan)
            log.info("[%d/%d] %s: training", index, len(runs), plan.name)
            metrics = run_point(spec, point, plan.run_dir, launcher, scheduler, resume, seed=seed)
        row = {"point": point_name(spec.point_of(point)), "seed": seed, **point}
        row.update({k: metrics.get(k) for k in RESULT_KEYS})
        rows.append(row)
        log.info(
            "[%d/%d] %s: logloss %.5f auc %.4f, %s FLOPs/example",
            index,
            len(runs),
            plan.name,
            metrics["logloss"],
            metrics["auc"],
            f"{metrics['flops_per_example']:,}",
        )
    write_results(rows, output, spec.select)
    return rows
