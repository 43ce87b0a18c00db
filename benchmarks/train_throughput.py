"""Training samples/s of terarec vs torchrec's own ``DLRM_DCN`` on the same in-memory batches.

    .venv/bin/python benchmarks/train_throughput.py [--rows 400000] [--batch-size 1024] [--steps 150] [--repeats 3]
    .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/train_throughput.py

One run, one process group, the same threads. Batches are made once by terarec's loader from a
synthetic Criteo-1TB-shaped dataset and held in memory; both sides train on exactly those batches:

- terarec: ``build_model`` (dcnv2 ``--flavor``, default ``small``) + ``parallelize`` (planner -> DMP -> fused row-wise
  Adagrad + Adam) + ``Trainer`` (what ``terarec train`` runs: the pipeline, LR schedule, padding
  mask, sample counting, loss logging);
- reference: torchrec ``DLRM_DCN`` with the flavor's sizes (``small``: bottom 64-16, 3 cross layers
  of rank 64, top 256-128-1; ``mlperf``: MLPerf DLRMv2's) in ``DLRMTrain``,
  ``DistributedModelParallel`` with torchrec's default planner,
  ``apply_optimizer_in_backward(RowWiseAdagrad)``, ``KeyedOptimizerWrapper(Adam)`` and a bare
  ``TrainPipelineSparseDist.progress`` loop.

Rounds are interleaved (terarec, reference, ...) and the best of each is kept. Also measured:
terarec end to end from parquet (the loader included), and the peak RSS of each side (VmHWM,
reset between phases) against the theoretical bytes of its parameters, dense gradients and
optimizer state. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.models.dlrm import DLRM_DCN, DLRMTrain
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from terarec.configs.loader import load_config
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetSchema
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.models import TrainWrapper
from terarec.trainer.loop import Trainer
from terarec.trainer.model_factory import BuiltModel, build_model
from terarec.trainer.parallelize import parallelize
from terarec.trainer.setup import join_process_group


class InMemoryBatches:
    """The loader interface the Trainer uses, over a fixed list of batches (repeated)."""

    def __init__(self, batches: list[Batch], steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        return islice(cycle(self.batches), self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {}


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS (VmHWM) to the current RSS
        f.write("5")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def terarec_config(args: argparse.Namespace, data: Path, run_dir: Path) -> Any:
    return load_config(
        None,
        [
            "model.name=dcnv2",
            f"model.flavor={args.flavor}",
            f"embeddings.max_rows={args.max_rows}",
            f"data.path={data}",
            f"train.batch_size={args.batch_size}",
            f"train.max_steps={args.steps}",
            f"train.log_every={args.steps}",
            "logging.tensorboard=false",
            "logging.progress=false",
            "checkpoint.final=false",
            f"run.dir={run_dir}",
            "logging.level=WARNING",
        ],
    )


def sharding_types(dmp: DistributedModelParallel) -> list[str]:
    return sorted({p.sharding_type for module in dmp.plan.plan.values() for p in module.values()})


def run_terarec(cfg: Any, schema: DatasetSchema, info: Any, loader: Any) -> tuple[float, dict[str, int], list[str]]:
    """samples/s of the Trainer over ``loader``; the model's summary; the plan's sharding types."""
    built = build_model(cfg, schema, "meta")
    summary = built.summary()  # before DMP swaps the tables for their shards
    dmp, optimizer = parallelize(TrainWrapper(built.model), cfg, info, list(built.table_sizes))
    trainer = Trainer(cfg, info, dmp, optimizer, loader, None, Path(cfg.run.dir), summary)
    metrics = trainer.fit()
    return float(metrics["samples_per_s"]), summary, sharding_types(dmp)


def build_reference(
    cfg: Any, schema: DatasetSchema, sizes: BuiltModel, info: Any
) -> tuple[TrainPipelineSparseDist, Any, int]:
    """torchrec's DLRM_DCN with the same sizes as terarec's dcnv2 flavor (``sizes``), sharded and
    optimised the plain torchrec way."""
    hp = sizes.hparams
    ebc = EmbeddingBagCollection(tables=sizes.tables.bag_configs(), device=torch.device("meta"))
    model = DLRMTrain(
        DLRM_DCN(
            embedding_bag_collection=ebc,
            dense_in_features=len(schema.dense),
            dense_arch_layer_sizes=hp.bottom_mlp,
            over_arch_layer_sizes=hp.top_mlp,
            dcn_num_layers=hp.num_layers,
            dcn_low_rank_dim=hp.low_rank,
            dense_device=info.device,
        )
    )
    apply_optimizer_in_backward(
        RowWiseAdagrad, model.model.sparse_arch.parameters(), {"lr": cfg.optim.sparse_lr, "eps": cfg.optim.eps}
    )
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=info.world_size, compute_device=info.device.type))
    plan = planner.collective_plan(model, None, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=info.device, plan=plan)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=cfg.optim.lr),
    )
    optimizer = CombinedOptimizer([("sparse", dmp.fused_optimizer), ("dense", dense)])
    dense_params = sum(p.numel() for n, p in model.named_parameters() if "sparse_arch" not in n)
    return TrainPipelineSparseDist(dmp, optimizer, info.device), dmp, dense_params


def run_reference(
    pipeline: TrainPipelineSparseDist, batches: list[Batch], steps: int, batch_size: int, world: int
) -> float:
    iterator = islice(cycle(batches), steps)
    start = time.perf_counter()
    while True:
        try:
            pipeline.progress(iterator)
        except StopIteration:
            break
    return steps * batch_size * world / (time.perf_counter() - start)


def theoretical_bytes(params_dense: int, params_sparse: int, embedding_dim: int, world: int) -> int:
    """Per rank: sharded tables (+ one row-wise Adagrad float per row), replicated dense weights,
    their gradients and Adam's two moments; fp32."""
    return 4 * (int(params_sparse * (1 + 1 / embedding_dim)) // world + 4 * params_dense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000, help="synthetic rows (the batches cycle over them)")
    parser.add_argument("--batch-size", type=int, default=1024, help="per rank")
    parser.add_argument("--steps", type=int, default=150, help="training steps per round")
    parser.add_argument("--max-rows", type=int, default=100_000, help="embedding rows per table (embeddings.max_rows)")
    parser.add_argument(
        "--flavor",
        default="small",
        choices=["small", "mlperf"],
        help="dcnv2 flavor (mlperf: the MLPerf DLRMv2 dense sizes)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each is kept")
    args = parser.parse_args()
    info = join_process_group()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(os.environ.get("TERAREC_BENCH_DATA", Path(tmp) / "data"))
        if info.rank == 0 and not (data / "schema.json").is_file():
            write_synthetic(SynthSpec(rows=args.rows, eval_fraction=0.0), data, progress=False)
        dist.barrier()
        schema = DatasetSchema.load(data)
        cfg = terarec_config(args, data, Path(tmp) / "run")
        Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
        sizes = build_model(cfg, schema, "meta")
        table_sizes, dim = sizes.table_sizes, sizes.hparams.embedding_dim
        loader = BatchLoader(
            LoaderSpec(str(data), "train", args.batch_size, table_sizes, shuffle_buffer=131072),
            schema,
            info.rank,
            info.world_size,
        )
        batches = list(islice(iter(loader), args.steps))
        ours = reference = end_to_end = 0.0
        peaks: dict[str, int] = {}
        for _ in range(args.repeats):
            reset_peak_rss()
            before = peak_rss_bytes()
            rate, summary, our_plan = run_terarec(cfg, schema, info, InMemoryBatches(batches, args.steps))
            ours, peaks["terarec"] = max(ours, rate), peak_rss_bytes() - before
            reset_peak_rss()
            before = peak_rss_bytes()
            pipeline, dmp, ref_dense = build_reference(cfg, schema, sizes, info)
            reference = max(reference, run_reference(pipeline, batches, args.steps, args.batch_size, info.world_size))
            reference_plan = sharding_types(dmp)
            peaks["reference"] = peak_rss_bytes() - before
            del pipeline, dmp
            end_to_end = max(end_to_end, run_terarec(cfg, schema, info, loader)[0])
    theory = theoretical_bytes(summary["params_dense"], summary["params_sparse"], dim, info.world_size)
    result = {
        "terarec_samples_per_s": round(ours),
        "torchrec_dlrm_dcn_samples_per_s": round(reference),
        "ratio": round(ours / reference, 3),
        "terarec_end_to_end_samples_per_s": round(end_to_end),
        "end_to_end_ratio": round(end_to_end / reference, 3),
        "params_dense": summary["params_dense"],
        "reference_params_dense": ref_dense,
        "params_sparse": summary["params_sparse"],
        "theoretical_bytes_per_rank": theory,
        "terarec_peak_rss_increase_bytes": peaks["terarec"],
        "reference_peak_rss_increase_bytes": peaks["reference"],
        "rss_over_theory": round(peaks["terarec"] / theory, 2),
        "sharding": our_plan,
        "reference_sharding": reference_plan,
        "world_size": info.world_size,
        "device": str(info.device),
        "flavor": args.flavor,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "steps": args.steps,
    }
    if info.rank == 0:
        print(
            f"terarec {ours:,.0f} samples/s vs torchrec DLRM_DCN {reference:,.0f}: ratio {ours / reference:.3f} "
            f"(end to end from parquet: {end_to_end:,.0f}, ratio {end_to_end / reference:.3f}); "
            f"peak RSS +{peaks['terarec'] / 2**20:.0f} MiB vs {theory / 2**20:.0f} MiB of parameters + optimizer state"
        )
        print(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
