"""torchx components: ``terarec train`` on any torchx scheduler, with in-place elastic restarts.

    torchx run -s local_cwd terarec/launch/components.py:train --nproc_per_node 2 -- \\
        --config dcnv2_synth data.path=runs/data/synth resume=auto

torchx's ``dist.ddp`` retries a failed job through the scheduler (``max_retries``); these components
run ``torchrun --max-restarts=N`` inside the job, so a lost worker restarts the group in place and
``resume=auto`` continues from the newest checkpoint. ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` keeps
restarts from reusing a stale rendezvous store (pytorch#135712; STACK_NOTES).
"""

from __future__ import annotations

import shlex
from typing import Optional

from torchx import specs
from torchx.specs import macros

from terarec.launch.torchrun import RESTART_SAFE_ENV, torchrun_command


def train(*script_args: str, nnodes: int = 1, nproc_per_node: int = 1, max_restarts: int = 3, image: str = ".",
          cpu: int = 2, gpu: int = 0, memMB: int = 8192, env: Optional[dict[str, str]] = None,  # noqa: N803 (torchx's name)
          python: str = "python") -> specs.AppDef:
    """terarec train under torchrun on every node.

    Args:
        script_args: ``--config RECIPE key=value ...``, as for ``terarec train``
        nnodes: number of nodes (replicas)
        nproc_per_node: processes per node (one per GPU on GPU hosts)
        max_restarts: in-place torchrun restarts after a worker fails (use with resume=auto)
        image: the directory (local schedulers) or container image holding terarec
        cpu: CPUs per node
        gpu: GPUs per node
        memMB: memory per node in MB
        env: extra environment variables
        python: the interpreter with terarec installed (e.g. .venv/bin/python for local_cwd)
    """
    # multi-node: rank 0's host comes from the scheduler's macro, as in torchx's dist.ddp
    endpoint = "localhost:0" if nnodes == 1 else f"$${{{macros.rank0_env}:=localhost}}:29500"
    command = torchrun_command("terarec.trainer.main", list(script_args), nproc_per_node, nnodes, max_restarts,
                               rdzv_endpoint=endpoint, rdzv_id=macros.app_id, python=python)
    return specs.AppDef(
        name="terarec-train",
        roles=[specs.Role(
            name="trainer", image=image, entrypoint="bash", args=["-c", " ".join(shlex.quote(a) if "$" not in a else a for a in command)],
            num_replicas=nnodes, resource=specs.resource(cpu=cpu, gpu=gpu, memMB=memMB),
            env={**RESTART_SAFE_ENV, **(env or {})}, port_map={"c10d": 29500},
        )],
    )
