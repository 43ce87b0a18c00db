"""Scaling: 1 vs 2 training processes on this machine, and the plan a GPU cluster would get.

    .venv/bin/python benchmarks/scaling_bench.py [--rows 400000] [--steps 300] [--batch-size 1024]

(a) ``terarec train`` (dcnv2_synth, table-wise sharded tables over gloo) with 1 process using every
    core, then 2 processes sharing them (``OMP_NUM_THREADS`` split), the same per-rank batch;
    samples/s of each and the speedup. On a 2-core VM both use the same two cores, so the ideal is
    about 1.0x: this measures what distribution costs (all-to-alls and all-reduces over gloo).
(b) TorchRec's planner on the MLPerf DLRMv2 model (``dcnv2_mlperf``: dim 128, 40M-row cap, Criteo
    1TB cardinalities) for 8 and 64 simulated 80 GB GPUs (8 per host) at a global batch of 65536:
    sharding types chosen, per-rank HBM (max / min) and the planner's per-rank estimates of
    compute and communication time for one step.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from terarec.configs.loader import load_config
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.launch.torchrun import RESTART_SAFE_ENV, trainer_command

GIB = 2**30


def train_samples_per_s(data: Path, run_dir: Path, nproc: int, steps: int, batch_size: int) -> float:
    threads = max(1, (os.cpu_count() or 1) // nproc)
    args = [
        "--config",
        "dcnv2_synth",
        f"data.path={data}",
        f"run.dir={run_dir}",
        f"train.max_steps={steps}",
        "train.epochs=1000",  # the step count is the budget: epochs must not end the run first
        f"train.batch_size={batch_size}",
        f"train.log_every={steps}",
        "sharding.sharding_type=table_wise",
        "logging.progress=false",
        "logging.tensorboard=false",
        "checkpoint.final=false",
        "logging.level=WARNING",
    ]
    env = {**os.environ, **RESTART_SAFE_ENV, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(trainer_command(args, nproc), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training with {nproc} process(es) failed:\n{done.stderr[-3000:]}")
    return float(json.loads((run_dir / "metrics.json").read_text())["samples_per_s"])


def plan_report(world_size: int, global_batch: int = 65536, hbm_gib: int = 80) -> dict[str, Any]:
    """Plan dcnv2_mlperf for ``world_size`` simulated GPUs with torchrec's planner (no GPU needed)."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology

    from terarec.data_pipeline.criteo_layout import criteo_1tb_reference_schema
    from terarec.models import TrainWrapper
    from terarec.trainer.model_factory import build_model

    cfg = load_config("dcnv2_mlperf", [])
    built = build_model(cfg, criteo_1tb_reference_schema(), "meta")
    topology = Topology(
        world_size=world_size,
        compute_device="cuda",
        hbm_cap=hbm_gib * GIB,
        ddr_cap=1024 * GIB,
        local_world_size=min(8, world_size),
    )
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=global_batch // world_size)
    planner.plan(TrainWrapper(built.model), [EmbeddingBagCollectionSharder()])
    hbm, compute, comms = Counter(), Counter(), Counter()
    types: Counter = Counter()
    for option in planner._best_plan or []:
        types[option.sharding_type] += 1
        for shard in option.shards:
            hbm[shard.rank] += shard.storage.hbm
            compute[shard.rank] += shard.perf.fwd_compute + shard.perf.bwd_compute
            comms[shard.rank] += shard.perf.fwd_comms + shard.perf.bwd_comms + shard.perf.input_dist_comms
    ranks = range(world_size)
    return {
        "world_size": world_size,
        "per_rank_batch": global_batch // world_size,
        "tables_by_sharding_type": dict(types),
        "hbm_gib_max": round(max(hbm[r] for r in ranks) / GIB, 2),
        "hbm_gib_min": round(min(hbm[r] for r in ranks) / GIB, 2),
        "est_compute_ms_max": round(max(compute[r] for r in ranks), 3),
        "est_comms_ms_max": round(max(comms[r] for r in ranks), 3),
        "params_sparse": built.summary()["params_sparse"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=1024, help="per rank")
    parser.add_argument("--skip-train", action="store_true", help="only the planner report")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            write_synthetic(SynthSpec(rows=args.rows, eval_fraction=0.05), Path(tmp) / "data", progress=False)
            rates = {
                n: train_samples_per_s(Path(tmp) / "data", Path(tmp) / f"run{n}", n, args.steps, args.batch_size)
                for n in (1, 2)
            }
        result.update(
            {
                "samples_per_s_1proc": round(rates[1]),
                "samples_per_s_2proc": round(rates[2]),
                "speedup_2_vs_1": round(rates[2] / rates[1], 3),
                "cpu_count": os.cpu_count(),
            }
        )
        print(
            f"1 process {rates[1]:,.0f} samples/s, 2 processes {rates[2]:,.0f}: "
            f"{rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores"
        )
    plans = [plan_report(w) for w in (8, 64)]
    for p in plans:
        print(
            f"dcnv2_mlperf on {p['world_size']} GPUs (batch {p['per_rank_batch']}/rank): "
            f"{p['tables_by_sharding_type']}, "
            f"HBM per rank {p['hbm_gib_min']}-{p['hbm_gib_max']} GiB, est. compute {p['est_compute_ms_max']} ms, "
            f"comms {p['est_comms_ms_max']} ms per step (slowest rank)"
        )
    result["plans"] = plans
    print(json.dumps(result))


if __name__ == "__main__":
    main()
