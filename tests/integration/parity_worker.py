"""Sharded-vs-unsharded parity, run under ``torchrun --nproc_per_node 2`` by test_parity.py.

Every rank builds the same unsharded reference model (seeded, on CPU), shards a ``meta`` copy
with terarec's own ``parallelize`` (planner -> DMP -> fused sparse optimizer), copies the
reference weights into the shards, then trains both for a few steps on the same data: the
sharded model under ``TrainPipelineSparseDist`` on each rank's batches, the reference on their
concatenation. Rank 0 writes per-step losses and the largest weight difference as JSON.

Gradient semantics being matched: DDP averages dense gradients over ranks; TorchRec divides a
sharded table's gradient by the world size in its backward all-to-all ("gradient division"), and
data-parallel tables are DDP-averaged; so every gradient equals the gradient of the global-batch
mean loss, which is what the reference takes. SGD everywhere keeps the comparison exact (Adam's
first steps amplify float-rounding differences of near-zero gradients to lr-sized ones).
"""

from __future__ import annotations

import argparse
import json
from itertools import islice

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor, distribute_tensor
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from terarec.batch import real_rows
from terarec.configs.loader import load_config
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetSchema
from terarec.models import TrainWrapper
from terarec.models.common import embedding_modules
from terarec.trainer.distributed import init_distributed
from terarec.trainer.model_factory import build_model
from terarec.trainer.parallelize import parallelize


def _concat(batches: list[Batch]) -> Batch:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kjt = KeyedJaggedTensor.from_jt_dict(
        {key: _cat_jt([b.sparse_features[key] for b in batches]) for key in batches[0].sparse_features.keys()}
    )
    return Batch(torch.cat([b.dense_features for b in batches]), kjt, torch.cat([b.labels for b in batches]))


def _cat_jt(jts):
    from torchrec.sparse.jagged_tensor import JaggedTensor

    return JaggedTensor(values=torch.cat([j.values() for j in jts]), lengths=torch.cat([j.lengths() for j in jts]))


def _shard_views(state: dict, reference: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(local tensor, matching slice of the reference) for every entry of a DMP state dict."""
    pairs = []
    for key, value in state.items():
        full = reference[key]
        if isinstance(value, DTensor):  # FSDP2: this rank's slice of the dense parameter
            pairs.append((value.to_local(), distribute_tensor(full, value.device_mesh, value.placements).to_local()))
        elif isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                rows, cols = shard.metadata.shard_offsets
                size_r, size_c = shard.metadata.shard_sizes
                pairs.append((shard.tensor, full[rows : rows + size_r, cols : cols + size_c]))
        else:
            pairs.append((value, full))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--sharding", required=True)
    parser.add_argument("--recipe", default="dcnv2_synth")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dense", default="ddp")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    info = init_distributed()
    world = info.world_size
    cfg = load_config(
        args.recipe,
        [
            f"data.path={args.data}",
            "data.shuffle_buffer=0",
            "embeddings.max_rows=500",
            "train.batch_size=64",
            f"sharding.sharding_type={args.sharding}",
            "optim.sparse=sgd",
            "optim.sparse_lr=2.0",
            "optim.dense=sgd",
            "optim.lr=0.1",
            f"sharding.dense={args.dense}",
        ],
    )
    schema = DatasetSchema.load(args.data)
    torch.manual_seed(0)
    reference = TrainWrapper(build_model(cfg, schema, "cpu").model)
    built = build_model(cfg, schema, "meta")
    dmp, optimizer = parallelize(TrainWrapper(built.model), cfg, info, list(built.table_sizes))
    with torch.no_grad():
        for local, full in _shard_views(dmp.state_dict(), reference.state_dict()):
            local.copy_(full)

    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    sparse_ids = {id(p) for m in embedding_modules(reference) for p in m.parameters()}
    dense_params = [p for p in reference.parameters() if id(p) not in sparse_ids]
    sparse_params = [p for p in reference.parameters() if id(p) in sparse_ids]
    ref_dense = torch.optim.SGD(dense_params, lr=cfg.optim.lr)
    ref_sparse = torch.optim.SGD(sparse_params, lr=cfg.optim.sparse_lr)

    def loader(rank: int) -> BatchLoader:
        spec = LoaderSpec(args.data, "train", cfg.train.batch_size, built.table_sizes, shuffle_buffer=0)
        return BatchLoader(spec, schema, rank, world)

    mine = list(islice(iter(loader(info.rank)), args.steps))
    everyone = [list(islice(iter(loader(r)), args.steps)) for r in range(world)]
    assert all(real_rows(b.labels).all() for per_rank in everyone for b in per_rank), (
        "parity needs batches without padding"
    )

    pipeline = TrainPipelineSparseDist(dmp, optimizer, info.device, execute_all_batches=True)
    sharded_losses, reference_losses = [], []
    it = iter(mine)
    for step in range(args.steps):
        loss, _, _ = pipeline.progress(it)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        sharded_losses.append(float(mean) / world)
        ref_loss, _ = reference(_concat([everyone[r][step] for r in range(world)]))
        ref_dense.zero_grad()
        ref_sparse.zero_grad()
        ref_loss.backward()
        ref_dense.step()
        ref_sparse.step()
        reference_losses.append(float(ref_loss.detach()))

    with torch.no_grad():
        diffs = [
            float((local - full).abs().max())
            for local, full in _shard_views(dmp.state_dict(), reference.state_dict())
            if local.numel()
        ]
    worst = torch.tensor([max(diffs)])
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    moved = {k: float((v - initial[k]).abs().max()) for k, v in reference.state_dict().items()}
    if info.rank == 0:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "sharded": sharded_losses,
                    "reference": reference_losses,
                    "max_weight_diff": float(worst),
                    "moved": moved,
                    "dtensor_params": sum(isinstance(v, DTensor) for v in dmp.state_dict().values()),
                    "plan": str(dmp.plan),
                },
                f,
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
