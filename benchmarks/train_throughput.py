"""Training samples/s of terarec vs torchrec's own ``DLRM_DCN`` on the same in-memory batches.

    .venv/bin/python benchmarks/train_throughput.py [--rows 400000] [--batch-size 1024] [--steps 150] [--repeats 3]
    .venv/bin/python benchmarks/train_throughput.py --nproc 2     # each side under torchrun, 2 ranks

Each side runs in its own process (or torchrun job), started afresh every round, so that its peak
RSS is its own: ``os.wait4`` returns the child's ``ru_maxrss`` (KiB on Linux; under torchrun the
largest rank's, as waited-for descendants count). Batches are made by terarec's loader from one
synthetic Criteo-1TB-shaped dataset (written once) and held in memory; both in-memory sides train
on exactly those batches (the first ``--steps`` of the same seed):

- terarec: ``build_model`` (dcnv2 ``--flavor``, default ``small``) + ``parallelize`` (planner -> DMP -> fused row-wise
  Adagrad + Adam) + ``Trainer`` (what ``terarec train`` runs: the pipeline, LR schedule, padding
  mask, sample counting, loss logging);
- reference: torchrec ``DLRM_DCN`` with the flavor's sizes (``small``: bottom 64-16, 3 cross layers
  of rank 64, top 256-128-1; ``mlperf``: MLPerf DLRMv2's) in ``DLRMTrain``,
  ``DistributedModelParallel`` with torchrec's default planner,
  ``apply_optimizer_in_backward(RowWiseAdagrad)``, ``KeyedOptimizerWrapper(Adam)`` and a bare
  ``TrainPipelineSparseDist.progress`` loop.

Rounds are interleaved (terarec, reference, end to end, ...) and the best and median of each are
kept. ``end_to_end``: the same terarec training reading parquet through the loader (what ``terarec
train`` does); ``end_to_end_ratio`` is its rate over the in-memory one (1.0: the loader never stalls
training), best over best; ``end_to_end_paired_median_ratio`` the median over rounds of the two measured
one after the other (a 12 s side's rate moves by up to 20% on a 2-core VM); ``end_to_end_data_wait_fraction``
the direct measure: the share of the training time the loop waited for its next batch (``data_wait_fraction``
of the Trainer's metrics; 0.04-0.05% since the loader reads ahead, in runs whose ratio moved 0.96-1.06). The
end-to-end side calls the loader's ``prefetch()`` before it builds the model, as ``terarec train`` does.
Peak RSS per side is printed against the theoretical bytes of parameters, dense gradients and optimizer
state. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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
from terarec.data_pipeline.manifest import dataset_fingerprint
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

    def will_read(self, batches: int) -> None:  # nothing to prepare ahead
        pass

    def close(self) -> None:
        pass


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


def run_terarec(
    cfg: Any, schema: DatasetSchema, info: Any, loader: Any
) -> tuple[dict[str, Any], dict[str, int], list[str]]:
    """The Trainer's metrics over ``loader`` (samples/s, data wait); the model's summary; the plan's sharding types."""
    built = build_model(cfg, schema, "meta")
    summary = built.summary()  # before DMP swaps the tables for their shards
    dmp, optimizer = parallelize(TrainWrapper(built.model), cfg, info, list(built.table_sizes))
    trainer = Trainer(cfg, info, dmp, optimizer, loader, None, Path(cfg.run.dir), summary)
    metrics = trainer.fit()
    return metrics, summary, sharding_types(dmp)


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


SIDES = ("terarec", "reference", "end_to_end")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--nproc", type=int, default=1, help="ranks per side (torchrun when > 1)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child process: one side, once
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_side(args: argparse.Namespace) -> None:
    """One side, in this process (group): prints its figures as JSON on rank 0."""
    info = join_process_group()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        schema = DatasetSchema.load(args.data)
        cfg = terarec_config(args, args.data, Path(tmp) / "run")
        Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
        sizes = build_model(cfg, schema, "meta")
        spec = LoaderSpec(str(args.data), "train", args.batch_size, sizes.table_sizes, shuffle_buffer=131072)
        loader = BatchLoader(spec, schema, info.rank, info.world_size)
        if args.side == "end_to_end":  # as `terarec train` does: the first windows are read during set-up
            loader.prefetch()
        out: dict[str, Any] = {"side": args.side, "world_size": info.world_size, "device": str(info.device)}
        if args.side == "reference":
            batches = list(islice(iter(loader), args.steps))
            pipeline, dmp, out["params_dense"] = build_reference(cfg, schema, sizes, info)
            out["samples_per_s"] = run_reference(pipeline, batches, args.steps, args.batch_size, info.world_size)
            out["sharding"] = sharding_types(dmp)
        else:
            source = (
                InMemoryBatches(list(islice(iter(loader), args.steps)), args.steps)
                if args.side == "terarec"
                else loader
            )
            metrics, summary, out["sharding"] = run_terarec(cfg, schema, info, source)
            out.update(samples_per_s=float(metrics["samples_per_s"]), data_wait_fraction=metrics["data_wait_fraction"])
            out.update(params_dense=summary["params_dense"], params_sparse=summary["params_sparse"])
            out["theoretical_bytes_per_rank"] = theoretical_bytes(
                summary["params_dense"], summary["params_sparse"], sizes.hparams.embedding_dim, info.world_size
            )
        out["threads"] = torch.get_num_threads()
    if info.rank == 0:
        print(json.dumps(out))
    dist.destroy_process_group()


def spawn_side(args: argparse.Namespace, side: str, data: Path) -> dict[str, Any]:
    """Run one side in a fresh child (or torchrun job); its JSON plus ``peak_rss_bytes``."""
    script = [str(Path(__file__).resolve()), "--side", side, "--data", str(data)]
    script += [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("batch_size", "steps", "max_rows", "flavor")]
    launcher = [sys.executable]
    if args.nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
    child = subprocess.Popen(launcher + script, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (and its waited-for ranks')
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"train_throughput: the {side} side failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024  # KiB on Linux
    result["cpu_s"] = usage.ru_utime + usage.ru_stime  # the whole child: start-up, batches, training
    return result


def summarize(rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    best = {side: max(r["samples_per_s"] for r in rounds[side]) for side in SIDES}
    median = {side: statistics.median(r["samples_per_s"] for r in rounds[side]) for side in SIDES}
    peak = {side: max(r["peak_rss_bytes"] for r in rounds[side]) for side in SIDES}
    ours, reference = rounds["terarec"][0], rounds["reference"][0]
    theory = ours["theoretical_bytes_per_rank"]
    return {
        "terarec_samples_per_s": round(best["terarec"]),
        "torchrec_dlrm_dcn_samples_per_s": round(best["reference"]),
        "ratio": round(best["terarec"] / best["reference"], 3),
        "terarec_end_to_end_samples_per_s": round(best["end_to_end"]),
        "end_to_end_ratio": round(best["end_to_end"] / best["terarec"], 3),
        "end_to_end_median_ratio": round(median["end_to_end"] / median["terarec"], 3),
        "end_to_end_paired_median_ratio": round(
            statistics.median(
                e["samples_per_s"] / t["samples_per_s"] for e, t in zip(rounds["end_to_end"], rounds["terarec"])
            ),
            3,
        ),
        # the direct measure of starvation: the share of training time the loop waited for its next batch
        "end_to_end_data_wait_fraction": round(
            statistics.median(r["data_wait_fraction"] for r in rounds["end_to_end"]), 4
        ),
        "in_memory_data_wait_fraction": round(statistics.median(r["data_wait_fraction"] for r in rounds["terarec"]), 4),
        "median_cpu_s": {side: round(statistics.median(r["cpu_s"] for r in rounds[side]), 2) for side in SIDES},
        "end_to_end_vs_reference": round(best["end_to_end"] / best["reference"], 3),
        "median_samples_per_s": {side: round(v) for side, v in median.items()},
        "params_dense": ours["params_dense"],
        "reference_params_dense": reference["params_dense"],
        "params_sparse": ours["params_sparse"],
        "theoretical_bytes_per_rank": theory,
        "peak_rss_bytes": peak,
        "peak_rss_ratio_terarec_over_reference": round(peak["terarec"] / peak["reference"], 3),
        "peak_rss_ratio_end_to_end_over_in_memory": round(peak["end_to_end"] / peak["terarec"], 3),
        "rss_over_theory": round(peak["terarec"] / theory, 2),
        "sharding": ours["sharding"],
        "reference_sharding": reference["sharding"],
        "world_size": ours["world_size"],
        "device": ours["device"],
        "flavor": args.flavor,
        "threads": ours["threads"],
        "batch_size": args.batch_size,
        "steps": args.steps,
    }


def bench_data(data: Path, rows: int) -> Path:
    """The synthetic dataset of ``rows`` rows at ``data``: written when absent, reused when it holds exactly
    ``rows`` rows (TERAREC_BENCH_DATA kept across runs), refused otherwise (its figures would be of other data)."""
    if not (data / "schema.json").is_file():
        write_synthetic(SynthSpec(rows=rows, eval_fraction=0.0), data, progress=False)
    held = sum(DatasetSchema.load(data).split_rows.values())
    if held != rows:
        raise SystemExit(f"train_throughput: {data} holds {held:,} rows, --rows is {rows:,}: use another directory")
    return data


def main() -> None:
    args = parse_args()
    if args.side:
        run_side(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = bench_data(Path(os.environ.get("TERAREC_BENCH_DATA", Path(tmp) / "data")), args.rows)
        rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for index in range(args.repeats):  # interleaved: a shared machine's noise hits every side
            for side in SIDES:
                rounds[side].append(spawn_side(args, side, data))
            print(
                f"round {index}: "
                + ", ".join(f"{s} {rounds[s][-1]['samples_per_s']:,.0f}" for s in SIDES)
                + " samples/s"
            )
    result = summarize(rounds, args) | {"data_rows": args.rows, "data_fingerprint": dataset_fingerprint(data)}
    mib = {side: v / 2**20 for side, v in result["peak_rss_bytes"].items()}
    print(
        f"terarec {result['terarec_samples_per_s']:,} samples/s vs torchrec DLRM_DCN "
        f"{result['torchrec_dlrm_dcn_samples_per_s']:,}: ratio {result['ratio']:.3f}; end to end from parquet "
        f"{result['terarec_end_to_end_samples_per_s']:,}: {result['end_to_end_ratio']:.3f} of in-memory (paired median "
        f"{result['end_to_end_paired_median_ratio']:.3f}; waiting for data "
        f"{100 * result['end_to_end_data_wait_fraction']:.1f}% of the time, in-memory "
        f"{100 * result['in_memory_data_wait_fraction']:.1f}%); peak RSS "
        f"terarec {mib['terarec']:.0f} MiB, reference {mib['reference']:.0f} MiB, "
        f"end to end {mib['end_to_end']:.0f} MiB "
        f"(theory {result['theoretical_bytes_per_rank'] / 2**20:.0f} MiB of parameters + optimizer state)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
