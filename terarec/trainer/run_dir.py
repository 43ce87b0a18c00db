"""A run directory belongs to one training: a lock, a config record that is never rewritten, and the
rule for what a resume may change.

``RUN/.lock`` is ``flock``-ed by rank 0 for the training's whole life: a second writer stops at
once, naming the holder (the kernel drops the lock when the holder dies, even by SIGKILL).
``RUN/config.yaml`` is the config the dir's checkpoints were started with, written once;
``RUN/configs/<N>.yaml`` records the resolved config of every start and resume, once it has begun (after
validation and, on resume, after the checkpoint and the loader's position were accepted).
Every checkpoint also stores the config and dataset it was trained with, so ``resume=auto``
compares against what the checkpoint really holds: keys outside :data:`MAY_CHANGE_ON_RESUME` must
match, or the resume stops with one line listing them. A fresh run (``resume=none``) into a dir
that holds checkpoints stops unless ``run.overwrite=true`` asks to delete them.

Rank 0 decides (it is the one that touches the dir) and every rank raises the same one-line error.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from terarec.configs.loader import ConfigError, config_text, config_to_dict, read_yaml
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetSchema
from terarec.trainer.checkpoint import MANIFEST, step_dirs
from terarec.trainer.distributed import from_rank0

log = logging.getLogger("terarec")

# The one place that says which config keys a resume may change (a key or a whole section). Every
# other key fixes what the checkpoint holds (model, embeddings, tables) or how its numbers continue
# (optimizer, batch size, seed, data): it must match the checkpoint's.
MAY_CHANGE_ON_RESUME: dict[str, str] = {
    "train.epochs": "how long to train",
    "train.max_steps": "how long to train",
    "train.max_minutes": "the time budget",
    "train.eval_every": "eval cadence",
    "train.patience": "how long early stopping waits (the best-so-far record continues)",
    "train.eval_batch_size": "eval batching, not the model",
    "train.log_every": "log cadence",
    "train.collective_timeout_s": "how long ranks wait for a peer",
    "checkpoint": "checkpoint cadence and retention",
    "logging": "what is logged and how",
    "sharding": "the plan: DCP reshards tables and optimizer state onto any plan and world size",
    # the loader's state refuses a mid-epoch resume under another world size x num_workers (its streams)
    "data.num_workers": "loader streams: at an epoch boundary only (the loader's state checks it)",
    "data.path": "the dataset may move; its schema (features, cardinalities, rows) must be the same",
    "run": "the dir may be copied or moved; run.overwrite concerns fresh starts only",
    "resume": "how this start treats existing checkpoints",
}
DATASET_KEY = "data (the dataset's features, cardinalities and rows)"


class RunDirError(ConfigError):
    """The run dir cannot be used as asked (locked, read-only, another run's checkpoints): exit 2."""


def may_change_on_resume(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in MAY_CHANGE_ON_RESUME)


def config_leaves(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """``{"train.max_steps": 10, ..., "resume": "auto"}``: sections one level deep, dict values whole."""
    tree = config_to_dict(cfg) if isinstance(cfg, Config) else cfg
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{key}.{field}": v for field, v in value.items()})
        else:
            out[key] = value
    return out


def resume_changes(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changes that are refused, changes that are allowed), each as ``key (old -> new)``.

    Keys present on one side only (a config written by another terarec version) are not compared.
    """
    refused: list[str] = []
    allowed: list[str] = []
    for key in sorted(saved.keys() & current.keys()):
        if saved[key] != current[key]:
            change = f"{key} ({saved[key]!r} -> {current[key]!r})"
            (allowed if may_change_on_resume(key) else refused).append(change)
    return refused, allowed


def schema_fingerprint(schema: DatasetSchema) -> dict[str, Any]:
    """What a checkpoint's tables and loader position depend on; not where the data lives."""
    return {k: v for k, v in asdict(schema).items() if k in ("dense", "sparse", "sequence", "label", "split_rows")}


def uses_checkpoints(cfg: Config) -> bool:
    """Whether this run reads or writes ``RUN/checkpoints``: it saves some (cadence or final), resumes
    from them, or keeps the best one for early stopping."""
    saves = cfg.checkpoint.final or cfg.checkpoint.every_steps or cfg.checkpoint.every_minutes
    return bool(saves or cfg.resume == "auto" or cfg.train.early_stop != "off")


class RunDir:
    """``RUN`` opened for training; :meth:`close` releases the lock (also dropped at process exit)."""

    def __init__(self, path: Path, is_main: bool) -> None:
        self.path, self.is_main = path, is_main
        self.record: dict[str, str] = {}  # files every checkpoint stores: what it was trained with
        self._lock_fd: int | None = None
        self._start: tuple[str, int, bool] | None = None  # (note, world size, fresh): what record_start writes

    def open_for_training(self, cfg: Config, schema: DatasetSchema, world_size: int = 1) -> None:
        """Lock and check on rank 0; every rank raises the same :class:`RunDirError`. The start is
        recorded by :meth:`record_start`, once it has begun."""
        self.record = {
            "config.yaml": config_text(cfg),
            "dataset.json": json.dumps(schema_fingerprint(schema), indent=1) + "\n",
        }
        self._on_rank0(lambda: self._prepare(cfg, world_size))

    def record_start(self) -> None:
        """``configs/<N>.yaml`` (and a new run's ``config.yaml``) on rank 0, once the start has begun: after
        the model, the checkpoint and the loader's position were accepted, so a refused resume (e.g. a
        mid-epoch position under another loader layout) leaves no record of a start that never trained.
        Every rank raises the same :class:`RunDirError`."""

        def write() -> None:
            if self._start is not None:
                self._write_record(*self._start)

        self._on_rank0(write)

    def _on_rank0(self, action: Callable[[], None]) -> None:
        """``action`` on rank 0 only; its ConfigError or OSError (the lock then released) becomes the same
        one-line :class:`RunDirError` on every rank."""
        message = None
        if self.is_main:
            try:
                action()
            except (ConfigError, OSError) as err:
                message = str(err) if isinstance(err, ConfigError) else f"run dir {self.path}: {err}"
                self.close()
        message = from_rank0(message)
        if message:
            raise RunDirError(message)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- rank 0 ---------------------------------------------------------------------------
    def _prepare(self, cfg: Config, world_size: int) -> None:
        self._lock()
        self._probe_writable(self.path)
        if uses_checkpoints(cfg):
            self._probe_writable(self.path / "checkpoints")  # fail now, not at the first save
        self._clear_partial_saves()
        found = [path for _, path in step_dirs(self.path)]
        if cfg.resume == "auto" and found:
            note = self._check_resume(cfg, found)
        elif found and not cfg.run.overwrite:
            names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
            raise RunDirError(
                f"run dir {self.path} holds checkpoints of an earlier run ({names}): continue it with "
                "resume=auto, choose another run.dir, or pass run.overwrite=true to delete them"
            )
        elif found:
            self._discard_previous_run()
            note = "fresh start; run.overwrite=true deleted the earlier run's checkpoints"
        else:
            note = "fresh start"
        self._start = (note, world_size, not found)

    def _lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise RunDirError(
                f"run dir {self.path} is in use by another training ({holder}): wait for it to end or "
                "choose another run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%F %T')}\n".encode(), 0)
        self._lock_fd = fd

    def _probe_writable(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".write_probe_{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise RunDirError(f"cannot write to {directory} ({err.strerror or err}): make it writable") from None

    def _clear_partial_saves(self) -> None:
        """Saves a crash interrupted (no other writer exists: we hold the lock)."""
        for partial in (self.path / "checkpoints").glob(".*_step_*"):
            shutil.rmtree(partial, ignore_errors=True)
            log.info("removed an interrupted save: %s", partial)

    def _check_resume(self, cfg: Config, found: list[Path]) -> str:
        complete = [p for p in found if (p / MANIFEST).is_file()]
        if not complete:
            raise RunDirError(
                f"resume=auto: no complete checkpoint in {self.path / 'checkpoints'} ({found[0].name} has no "
                f"{MANIFEST}: written by an older terarec or damaged); start over with resume=none run.overwrite=true"
            )
        newest = complete[0]
        saved_cfg = newest / "config.yaml" if (newest / "config.yaml").is_file() else self.path / "config.yaml"
        refused, allowed = resume_changes(config_leaves(read_yaml(saved_cfg)), config_leaves(cfg))
        saved_data = newest / "dataset.json"
        if saved_data.is_file() and json.loads(saved_data.read_text()) != json.loads(self.record["dataset.json"]):
            refused.append(DATASET_KEY)
        if refused:
            raise RunDirError(
                f"resume=auto: {newest} was trained with other values of keys that fix what it holds: "
                f"{', '.join(refused)}; resume with the checkpoint's values or start a new run.dir"
            )
        allowed = [change for change in allowed if not change.startswith("resume ")]  # always the case here
        if allowed:
            log.info("resume=auto: changed since %s: %s", newest.name, ", ".join(allowed))
        return f"resume=auto from {newest.name}" + (f"; changed: {', '.join(allowed)}" if allowed else "")

    def _discard_previous_run(self) -> None:
        gone = [self.path / n for n in ("checkpoints", "configs", "config.yaml", "metrics.json", "eval.json", "tb")]
        for path in gone:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        log.warning("run.overwrite=true: deleted the earlier run in %s", self.path)

    def _write_record(self, note: str, world_size: int, fresh: bool) -> None:
        """``config.yaml`` once per run (a fresh start with no checkpoint here begins a new run);
        ``configs/<N>.yaml`` for every start, with why and what changed in a comment."""
        text = self.record["config.yaml"]
        if fresh or not (self.path / "config.yaml").is_file():
            _write_atomically(self.path / "config.yaml", text)
        configs = self.path / "configs"
        configs.mkdir(exist_ok=True)
        n = 1 + max((int(p.stem) for p in configs.glob("*.yaml") if p.stem.isdigit()), default=-1)
        _write_atomically(configs / f"{n}.yaml", f"# start {n}, world size {world_size}: {note}\n{text}")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
