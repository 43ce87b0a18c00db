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
``SWEEP/points/NAME`` (``.../NAME/seed_S`` with several seeds). ``--jobs N`` trains N runs at a time
(results keep the grid's order); local runs then get cores / (N x nproc) intra-op threads each (unless
OMP_NUM_THREADS is set), recorded per run as ``threads`` (float sums, hence a run's last digits, depend
on it). ``results.csv`` has one row per run, ``points.csv`` one per point (mean and std over its
seeds); the fits are on the means, weighted by ``1/std^2`` (``terarec.launch.scaling_fit``), and
points within noise of their neighbours are flagged (``noisy_points`` in fit.json).
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
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terarec.configs.loader import ConfigError, check_max_train_rows, config_to_dict, load_config, read_yaml
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import RunFailedError, UserError
from terarec.launch.reuse import Identity, Planned, decide, make_room, move_aside, stop_on_changes
from terarec.launch.scaling_fit import aggregate, fit_power_law, holdout_test  # noqa: F401  (this module's API too)
from terarec.launch.sweep_select import Selection, check_validation_rows, mark_selected
from terarec.launch.sweep_summary import RESULT_KEYS, point_keys, summarize
from terarec.launch.torchrun import child_user_error, run_child, trainer_command

log = logging.getLogger("terarec")


class SweepError(RunFailedError):
    """A point's training failed (not a user error): the message names the point and its log file."""


SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
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
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one point (with ``seed``: ``train.seed``) in a child process, or as a torchx job on
    ``scheduler``; its metrics. ``resume``: continue an unfinished run dir of the same config (``resume=auto``).
    ``threads``: the local child's intra-op threads (None: torch's default, all cores)."""
    args = ["--config", spec.base, *run_overrides(spec, point, run_dir, seed), *(["resume=auto"] if resume else [])]
    label = run_label(point, seed)
    if launcher == "torchx":
        return _run_point_torchx(args, spec.nproc, label, run_dir, scheduler)
    log_file = run_dir / "train.log"
    code = run_child(trainer_command(args, spec.nproc), log_file, threads)
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
    spec: SweepSpec,
    output: Path,
    launcher: str = "local",
    scheduler: str = "local_cwd",
    on_change: str = "stop",
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Every run (point x seed), ``jobs`` at a time (finished ones with the same config and data are
    read back, not re-run; ``on_change`` says what to do with the others, decided before anything
    runs), then the results (only runs of this request, in grid order whatever order they finished
    in) and fits."""
    runs = plan_points(spec, output)
    stop_on_changes([plan for _, _, plan in runs], on_change, "sweep point")
    if any(plan.decision.action == "changed" for _, _, plan in runs) and (output / "results.csv").is_file():
        log.info("results.csv listed points now re-run: moved to %s", move_aside(output / "results.csv"))
    threads = _threads_per_run(jobs, spec.nproc) if launcher == "local" else None
    rows: list[dict[str, Any]] = []
    for (point, seed, _), metrics in zip(runs, _train_runs(spec, runs, launcher, scheduler, jobs, threads)):
        row = {"point": point_name(spec.point_of(point)), "seed": seed, **point}
        row.update({k: metrics.get(k) for k in RESULT_KEYS})
        rows.append(row)
    write_results(rows, output, spec.select)
    return rows


def _train_runs(
    spec: SweepSpec,
    runs: list[tuple[dict[str, Any], int | None, Planned]],
    launcher: str,
    scheduler: str,
    jobs: int,
    threads: int | None,
) -> list[dict[str, Any]]:
    """Each run's metrics, in the order of ``runs``: reused, or trained with up to ``jobs`` at once
    (:func:`_side_by_side`; the run dirs of finished runs are kept for a re-run when one fails)."""

    def train(index: int, point: dict[str, Any], seed: int | None, plan: Planned) -> dict[str, Any]:
        if plan.decision.action == "reuse":
            log.info("[%d/%d] %s: done earlier with the same config and data, skipped", index, len(runs), plan.name)
            metrics: dict[str, Any] = json.loads((plan.run_dir / "metrics.json").read_text())
        else:
            resume = make_room(plan)
            log.info("[%d/%d] %s: training", index, len(runs), plan.name)
            metrics = run_point(spec, point, plan.run_dir, launcher, scheduler, resume, seed=seed, threads=threads)
        log.info(
            "[%d/%d] %s: logloss %.5f auc %.4f, %s FLOPs/example",
            index,
            len(runs),
            plan.name,
            metrics["logloss"],
            metrics["auc"],
            f"{metrics['flops_per_example']:,}",
        )
        return metrics

    if jobs == 1:
        return [train(index, *run) for index, run in enumerate(runs, 1)]
    return _side_by_side(train, runs, jobs)


def _threads_per_run(jobs: int, nproc: int) -> int | None:
    """Intra-op threads of each process when ``jobs`` runs of ``nproc`` processes share this machine's
    cores evenly; None (torch's default) for one run at a time or when the user set OMP_NUM_THREADS."""
    if jobs == 1:
        return None
    if "OMP_NUM_THREADS" in os.environ:
        log.info("%d runs at a time, each with OMP_NUM_THREADS=%s (set here)", jobs, os.environ["OMP_NUM_THREADS"])
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // (jobs * nproc))
    log.info("%d runs at a time, %d intra-op thread(s) per process (%d cores)", jobs, threads, cores)
    return threads


def _side_by_side(train: Callable[..., dict[str, Any]], runs: list[Any], jobs: int) -> list[dict[str, Any]]:
    """``train(index, *run)`` for each of ``runs``, ``jobs`` at once; their results in the order of ``runs``.
    The first failure, or a Ctrl-C here, stops new runs from starting (a pool thread would pick the next
    one up at once); the running ones finish (local children got the Ctrl-C too; torchx jobs are waited
    for), then the first failure is raised and any other logged."""
    stop = threading.Event()

    def guarded(index: int, *run: Any) -> dict[str, Any]:
        if stop.is_set():
            return {}
        try:
            return train(index, *run)
        except BaseException:
            stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(guarded, index, *run) for index, run in enumerate(runs, 1)]
    try:
        failed = next((future for future in as_completed(futures) if future.exception() is not None), None)
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failed is not None:
        error = failed.exception()
        for index, future in enumerate(futures, 1):  # the runs that failed beside it (cancelled ones never ran)
            other = None if future.cancelled() else future.exception()
            if other is not None and other is not error:
                log.error("[%d/%d] also failed: %s", index, len(runs), other)
        raise error  # type: ignore[misc]
    return [future.result() for future in futures]
