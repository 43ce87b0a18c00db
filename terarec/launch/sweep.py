"""``terarec sweep``: a grid of training runs and a scaling-law fit over their results.

A sweep YAML names a base recipe and a grid; every point of the grid is one run::

    base: wukong_synth
    grid:
      model.num_layers: [1, 2, 4, 8]
    overrides: [train.max_steps=200]   # optional, applied to every point
    nproc: 1                           # processes per run (torchrun when > 1)

Each point runs in its own process (a crash stays in its point) under ``SWEEP/points/NAME``;
points whose ``metrics.json`` exists are skipped on a re-run. Results go to ``SWEEP/results.csv``;
a power law ``loss = a * x^b`` (least squares in log-log space) is fitted against forward FLOPs
per example and against dense parameters into ``SWEEP/fit.json``, drawn in ``SWEEP/scaling.png``
and logged as TensorBoard scaling curves (``SWEEP/tb``: the x value is the step).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from terarec.configs.loader import ConfigError, load_config

log = logging.getLogger("terarec")


class SweepError(RuntimeError):
    """A point's training failed: the message names the point and its log file."""
RESULT_KEYS = ["auc", "logloss", "ne", "params_dense", "params_sparse", "flops_per_example", "samples", "steps", "wall_s"]
FIT_AXES = {"flops_per_example": "forward FLOPs / example", "params_dense": "dense parameters"}


@dataclass
class SweepSpec:
    base: str
    grid: dict[str, list[Any]]
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1

    @classmethod
    def load(cls, path: str, extra: list[str]) -> "SweepSpec":
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"sweep file {path} not found")
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


def run_point(spec: SweepSpec, point: dict[str, Any], run_dir: Path, launcher: str = "local") -> dict[str, Any]:
    """Train one point in a child process (or a torchx job on the local scheduler); its metrics."""
    args = ["--config", spec.base, *spec.point_overrides(point), f"run.dir={run_dir}", "logging.progress=false"]
    if launcher == "torchx":
        return _run_point_torchx(args, spec.nproc, point, run_dir)
    if spec.nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(spec.nproc), "-m", "terarec.trainer.main", *args]
    else:
        cmd = [sys.executable, "-m", "terarec.trainer.main", *args]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    if done.returncode != 0:
        raise SweepError(f"sweep point {point_name(point)} failed (exit {done.returncode}); see {run_dir / 'train.log'}")
    return json.loads((run_dir / "metrics.json").read_text())


def _run_point_torchx(args: list[str], nproc: int, point: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from torchx.runner import get_runner
    from torchx.specs import AppState

    from terarec.launch.components import train

    runner = get_runner()
    handle = runner.run(train(*args, nproc_per_node=nproc, python=sys.executable), "local_cwd", cfg={})
    status = runner.wait(handle, wait_interval=1)
    if status is None or status.state != AppState.SUCCEEDED or not (run_dir / "metrics.json").is_file():
        raise SweepError(f"sweep point {point_name(point)} failed under torchx ({status}); handle {handle}")
    return json.loads((run_dir / "metrics.json").read_text())


def fit_power_law(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``y = a * x^b`` by least squares on ``log y = log a + b log x``; r2 in log space."""
    lx, ly = np.log(x), np.log(y)
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    total = ((ly - ly.mean()) ** 2).sum()
    return {"a": float(np.exp(log_a)), "b": float(b), "r2": float(1 - (residual**2).sum() / total) if total > 0 else 1.0}


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
        ax.scatter(x, y, label="runs")
        if len(set(x)) >= 2 and (y > 0).all():
            fits[key] = fit_power_law(x, y)
            grid = np.geomspace(x.min(), x.max(), 50)
            ax.plot(grid, fits[key]["a"] * grid ** fits[key]["b"], label=f"{fits[key]['a']:.3g} x^{fits[key]['b']:.3f} (r2 {fits[key]['r2']:.2f})")
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel=f"eval {metric}")
        ax.legend()
    writer.close()
    figure.tight_layout()
    figure.savefig(output / "scaling.png", dpi=120)
    plt.close(figure)
    (output / "fit.json").write_text(json.dumps({"metric": metric, "fits": fits, "points": len(rows)}, indent=2) + "\n")
    return fits


def run_sweep(spec: SweepSpec, output: Path, launcher: str = "local") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    points = spec.points()
    for index, point in enumerate(points, 1):
        run_dir = output / "points" / point_name(point)
        if (run_dir / "metrics.json").is_file():
            log.info("[%d/%d] %s: done earlier, skipped", index, len(points), point_name(point))
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            log.info("[%d/%d] %s: training", index, len(points), point_name(point))
            metrics = run_point(spec, point, run_dir, launcher)
        rows.append({"point": point_name(point), **point, **{k: metrics.get(k) for k in RESULT_KEYS}})
        log.info("[%d/%d] %s: logloss %.5f auc %.4f, %s FLOPs/example", index, len(points), point_name(point),
                 metrics["logloss"], metrics["auc"], f"{metrics['flops_per_example']:,}")
    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summarize(rows, output)
    return rows
