"""The one torchrun command line terarec builds (``eval --nproc``, ``launch``, sweeps, torchx)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# restarts must not reuse the previous rendezvous store (pytorch#135712; docs/stack.md)
RESTART_SAFE_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def torchrun_command(
    module: str,
    script_args: list[str],
    nproc_per_node: int,
    nnodes: int = 1,
    max_restarts: int = 0,
    rdzv_endpoint: str = "localhost:0",
    rdzv_id: str = "terarec",
    python: str = sys.executable,
) -> list[str]:
    """``python -m torch.distributed.run ... -m MODULE ARGS`` with c10d rendezvous; the defaults
    are a single node on a free local port (what ``--standalone`` does)."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        rdzv_endpoint,
        "--rdzv_id",
        rdzv_id,
        "--nnodes",
        str(nnodes),
        "--nproc_per_node",
        str(nproc_per_node),
        "--max-restarts",
        str(max_restarts),
        "-m",
        module,
        *script_args,
    ]


def trainer_command(script_args: list[str], nproc: int) -> list[str]:
    """``terarec train``'s process: torchrun for more than one process, plain python for one."""
    if nproc > 1:
        return torchrun_command("terarec.trainer.main", script_args, nproc)
    return [sys.executable, "-m", "terarec.trainer.main", *script_args]


def run_child(command: list[str], log_file: Path | None = None) -> int:
    """Run ``command`` (restart-safe environment) in the foreground, or with stdout and stderr into
    ``log_file``; its exit code."""
    env = {**os.environ, **RESTART_SAFE_ENV}
    if log_file is None:
        return subprocess.run(command, env=env).returncode
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
