"""torchx components: ``terarec train`` on any torchx scheduler, with in-place elastic restarts.

    torchx run -s local_cwd terarec/launch/components.py:train -j 1x2 -- \\
        --config dcnv2_synth data.path=runs/data/synth resume=auto

``train`` is torchx's ``dist.ddp`` (job size ``-j [MIN:]NNODESxNPROC``, resources or a named
resource ``-h``, env, mounts, scheduler retries) running ``terarec.trainer.main``, with two changes:

- torchrun gets ``--max-restarts=N``: a lost worker restarts the group in place and ``resume=auto``
  continues from the newest checkpoint, which is much cheaper than a scheduler retry
  (``max_retries``) that requeues the whole job;
- torchrun runs as ``PYTHON -m torch.distributed.run``, so the interpreter that has terarec
  installed is explicit (``.torchxconfig`` sets ``.venv/bin/python`` for the local schedulers).

``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` keeps restarts from reusing a stale rendezvous store
(pytorch#135712; docs/stack.md).
"""

import shlex
from typing import Dict, List, Optional  # torchx validates components against typing.Dict/List/Optional

from torchx import specs
from torchx.components import dist

from terarec.launch.torchrun import RESTART_SAFE_ENV

TRAINER_MODULE = "terarec.trainer.main"


def train(
    *script_args: str,
    j: str = "1x1",
    max_restarts: int = 3,
    image: str = ".",
    h: Optional[str] = None,
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    env: Optional[Dict[str, str]] = None,  # noqa: N803 (torchx's name)
    max_retries: int = 0,
    rdzv_port: int = 29500,
    mounts: Optional[List[str]] = None,
    python: str = "python",
) -> specs.AppDef:
    """terarec train under torchrun on every node (torchx ``dist.ddp`` plus in-place restarts).

    Args:
        script_args: ``--config RECIPE key=value ...``, as for ``terarec train``
        j: job size ``[{min_nnodes}:]{nnodes}x{nproc_per_node}``; on GPU hosts nproc_per_node <= GPUs per node
        max_restarts: in-place torchrun restarts after a worker fails (use with resume=auto)
        image: the directory (local schedulers, slurm) or container image holding terarec
        h: a registered named resource (takes precedence over cpu, gpu, memMB)
        cpu: CPUs per node
        gpu: GPUs per node
        memMB: memory per node in MB
        env: extra environment variables (e.g. NCCL_DEBUG=INFO)
        max_retries: scheduler-level retries of the whole job
        rdzv_port: rank 0's rendezvous port (multi-node only; single node picks a free port)
        mounts: volume mounts for container schedulers (type=bind,src=/data,dst=/data)
        python: the interpreter with terarec installed (.torchxconfig: .venv/bin/python)
    """
    app = dist.ddp(
        *script_args,
        m=TRAINER_MODULE,
        image=image,
        name="terarec-train",
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env={**RESTART_SAFE_ENV, **(env or {})},
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        mounts=mounts,
    )
    role = app.roles[0]
    flag, command = role.args  # ["-c", "torchrun --rdzv_backend ..."]
    if not command.startswith("torchrun "):
        raise RuntimeError(f"unexpected torchx dist.ddp command (torchx version change?): {command[:80]}")
    role.args = [
        flag,
        f"{shlex.quote(python)} -m torch.distributed.run --max-restarts {max_restarts} {command[len('torchrun ') :]}",
    ]
    role.name = "trainer"
    return app
