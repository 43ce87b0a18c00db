"""When a sweep point or a compare run already on disk may stand in for the one that would run now.

A run's identity is what made its numbers: its resolved config and the dataset it read (the
fingerprint of ``DATA/manifest.json``, which the trainer and the baselines record in
``RUN/metrics.json`` as ``dataset_fingerprint``). A finished run (``metrics.json`` present) is
reused only when both equal what would run now; otherwise it is *changed*, and ``--on-change``
decides for the whole command, before anything runs: ``stop`` (the default) names the changed runs
in one error line; ``rerun`` moves each aside to ``NAME.stale-<time>`` (results are never deleted)
and trains it again in a fresh dir. An unfinished run (no ``metrics.json``) is continued in place
(``resume=auto``) when its config matches, else moved aside and started fresh.

``run.*`` and ``resume`` say where and how a run starts, not what it computes: they are not compared.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from terarec.configs.loader import ConfigError

log = logging.getLogger("terarec")

ON_CHANGE = ("stop", "rerun")
METRICS_FILE = "metrics.json"
FINGERPRINT_KEY = "dataset_fingerprint"
NOT_IDENTITY = ("run", "resume")  # config keys (or sections) that do not change a run's numbers
SHOWN_KEYS = 3  # config differences named per run
SHOWN_RUNS = 5  # changed runs named in the stop message

# absent: nothing there; reuse: finished with this identity; changed: finished with another;
# continue: unfinished, same config (or none recorded yet); restart: unfinished with another config
Action = Literal["absent", "reuse", "changed", "continue", "restart"]


class ChangedRunsError(ConfigError):
    """Finished runs were made with other settings or data and ``--on-change stop``: one line, exit 2."""


@dataclass(frozen=True)
class Identity:
    """What would run now: the resolved config (a plain dict) and the dataset's fingerprint
    (None for a dataset prepared before manifests)."""

    config: dict[str, Any]
    dataset: str | None


@dataclass(frozen=True)
class Decision:
    action: Action
    detail: str = ""  # changed / restart: the first differences, e.g. "train.max_steps (8 -> 12); dataset changed"


@dataclass(frozen=True)
class Planned:
    """One run of a sweep or comparison and what to do with its directory."""

    name: str  # as the user knows it: "num_layers=2", "dlrm seed 0"
    run_dir: Path
    decision: Decision


def trainer_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a trainer run recorded (``RUN/config.yaml``: its first start's), or None."""
    saved = run_dir / "config.yaml"
    try:
        loaded = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


def decide(
    run_dir: Path, now: Identity, recorded_config: Callable[[Path], dict[str, Any] | None] = trainer_config
) -> Decision:
    """Reuse, changed (with the first differences), absent, or an unfinished dir to continue or restart."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return Decision("absent")
    saved = recorded_config(run_dir)
    differences = config_differences(saved, now.config) if saved is not None else []
    metrics = _read_metrics(run_dir)
    if metrics is None:
        return Decision("restart", describe(differences)) if differences else Decision("continue")
    if saved is None:
        return Decision("changed", f"no readable record of its config in {run_dir}")
    reasons = [describe(differences), dataset_difference(metrics, now.dataset)]
    detail = "; ".join(r for r in reasons if r)
    return Decision("changed", detail) if detail else Decision("reuse")


def _read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """``metrics.json`` (a finished run), or None; an unreadable one counts as unfinished."""
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"max_steps": 8}}`` -> ``{"train.max_steps": 8}`` (nested dicts all the way down)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key (old -> new)`` for every compared key that differs, in the order of ``now``."""
    before, after = flatten(saved), flatten(now)
    keys = [*after, *(k for k in before if k not in after)]
    return [
        f"{key} ({_show(before.get(key, '<unset>'))} -> {_show(after.get(key, '<unset>'))})"
        for key in keys
        if before.get(key, "<unset>") != after.get(key, "<unset>")
        and not any(key == k or key.startswith(f"{k}.") for k in NOT_IDENTITY)
    ]


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(differences: list[str]) -> str:
    """The first few config differences in one phrase ('' when there are none)."""
    if not differences:
        return ""
    more = f" and {len(differences) - SHOWN_KEYS} more key(s)" if len(differences) > SHOWN_KEYS else ""
    return "config " + ", ".join(differences[:SHOWN_KEYS]) + more


def dataset_difference(metrics: dict[str, Any], now: str | None) -> str:
    """'' when the run read the dataset that would be read now, else why not. A run that predates
    recorded fingerprints matches only a dataset that has none either (nothing to compare)."""
    if FINGERPRINT_KEY not in metrics:
        return "" if now is None else "dataset unknown (the run predates recorded dataset fingerprints)"
    recorded = metrics[FINGERPRINT_KEY]
    if recorded == now:
        return ""
    if now is None:
        return "dataset changed (it now has no manifest.json)"
    if recorded is None:
        return "dataset changed (it had no manifest.json when the run read it)"
    return f"dataset changed (fingerprint {str(recorded)[:8]} -> {now[:8]})"


def stop_on_changes(planned: list[Planned], on_change: str, noun: str) -> None:
    """With ``on_change == "stop"``: one error naming every changed run (before anything ran)."""
    if on_change not in ON_CHANGE:
        raise ConfigError(f"--on-change {on_change}: choose from {', '.join(ON_CHANGE)}")
    changed = [p for p in planned if p.decision.action == "changed"]
    if not changed or on_change == "rerun":
        return
    by_detail: dict[str, list[str]] = {}  # a changed override or dataset usually changes every run alike
    for p in changed:
        by_detail.setdefault(p.decision.detail, []).append(p.name)
    named = "; ".join(
        f"{_first(names, f'{noun}(s)')}: {detail}" for detail, names in list(by_detail.items())[:SHOWN_RUNS]
    )
    more = f"; and {len(by_detail) - SHOWN_RUNS} other difference(s)" if len(by_detail) > SHOWN_RUNS else ""
    where = os.path.commonpath([p.run_dir.parent for p in changed])
    raise ChangedRunsError(
        f"{len(changed)} finished {noun}(s) in {where} were made with another config or "
        f"dataset than this request ({named}{more}); nothing was run: pass --on-change rerun to move them "
        "aside and train them again, or choose another --output"
    )


def _first(names: list[str], noun: str) -> str:
    more = f" and {len(names) - SHOWN_RUNS} more {noun}" if len(names) > SHOWN_RUNS else ""
    return ", ".join(names[:SHOWN_RUNS]) + more


def make_room(planned: Planned) -> bool:
    """Before (re)running ``planned``: move a changed or restarted dir aside (saying so); whether
    to continue the dir in place with ``resume=auto``."""
    action = planned.decision.action
    if action in ("changed", "restart"):
        moved = move_aside(planned.run_dir)
        state = "finished" if action == "changed" else "unfinished"
        log.info(
            "%s: %s run differs (%s): moved to %s; training afresh", planned.name, state, planned.decision.detail, moved
        )
        return False
    if action == "continue":
        log.info("%s: unfinished with the same config: continuing in place (resume=auto)", planned.name)
        return True
    return False


STALE_SUFFIX = ".stale-"  # what move_aside appends to a changed run's name, before its time stamp
STALE_PATTERN = f"NAME{STALE_SUFFIX}<time>"  # the same, as help texts show it


def move_aside(path: Path) -> Path:
    """Rename a run dir (or a results file) to ``NAME.stale-<YYYYmmdd-HHMMSS>`` beside it (``-2``,
    ``-3``... when taken): what a changed run computed is kept, never deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}{STALE_SUFFIX}{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{STALE_SUFFIX}{stamp}-{n}")
    path.rename(target)
    return target
