"""torchx component and ``terarec launch``: command lines and one-line errors."""

from __future__ import annotations

import pytest

from terarec.cli import main
from terarec.launch.components import train


def test_train_component_runs_torchrun_with_in_place_restarts() -> None:
    app = train("--config", "dcnv2_synth", "train.max_steps=5", j="2x4", max_restarts=2, gpu=4)
    role = app.roles[0]
    command = role.args[1]
    assert role.entrypoint == "bash" and role.num_replicas == 2 and role.resource.gpu == 4
    for part in (
        "python -m torch.distributed.run --max-restarts 2",
        "--nnodes 2",
        "--nproc_per_node 4",
        "-m terarec.trainer.main --config dcnv2_synth train.max_steps=5",
    ):
        assert part in command, part
    assert "--rdzv_endpoint $${${rank0_env}:=localhost}:29500" in command  # torchx fills in the scheduler's rank-0 host
    assert role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # restarts must not reuse the old store


def test_launch_needs_train_and_validates_config_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "--", "dance"]) == 2
    assert "usage: terarec launch -- train" in capsys.readouterr().err
    assert main(["launch", "--", "train", "--config", "dcnv2_synth", "bad.key=1"]) == 2
    assert "unknown config key 'bad.key'" in capsys.readouterr().err


def test_train_component_keeps_dist_ddp_job_size_and_resources() -> None:
    app = train(
        "--config",
        "wukong_synth",
        j="2:4x8",
        h=None,
        memMB=65536,
        env={"NCCL_DEBUG": "INFO"},
        python="/opt/my env/python",
    )
    role = app.roles[0]
    assert (role.min_replicas, role.num_replicas, role.resource.memMB) == (2, 4, 65536)  # elastic 2..4 nodes
    assert role.args[1].startswith("'/opt/my env/python' -m torch.distributed.run --max-restarts 3 ")
    assert "--nnodes 2:4 --nproc_per_node 8" in role.args[1]
    assert role.env["NCCL_DEBUG"] == "INFO" and role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
