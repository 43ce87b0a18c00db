"""Typed run configuration: one dataclass per section, nested under :class:`Config`.

Every field here is a config key: ``train.batch_size`` is ``Config.train.batch_size``. Recipes
(``recipes/*.yaml``) and dotted CLI overrides are checked against these types by
:mod:`terarec.configs.loader` before any process group starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class DataConfig:
    """Where the prepared dataset lives and how the streaming loader reads it."""

    path: str = ""  # a prepared dataset DIR (schema.json + train/ + eval/)
    train_split: str = "train"
    eval_split: str = "eval"
    shuffle_buffer: int = 16384  # rows held for the bounded shuffle; 0 disables shuffling
    dense_fill: float = 0.0  # value for null dense features before the transform
    dense_transform: Literal["log1p", "none"] = "log1p"  # log(1 + max(x, 0)), as DLRM does
    max_history: int = 50  # sequence features are cut to the most recent N items
    num_workers: int = 0  # DataLoader workers; 0 is fastest on 2 cores (STACK_NOTES)


@dataclass
class EmbeddingsConfig:
    """Embedding tables: one per sparse feature, sized from the schema and capped here."""

    dim: int | None = None  # None: the model flavor's embedding_dim
    max_rows: int = 1_000_000  # raw ids are hashed modulo min(cardinality, max_rows)
    rows: dict[str, int] = field(default_factory=dict)  # per-feature row count overrides
    hash: Literal["modulo"] = "modulo"


@dataclass
class ModelConfig:
    """Which registered model to build; ``flavor`` picks a size preset, ``args`` overrides it."""

    name: str = "dcnv2"
    flavor: str = "small"
    num_layers: int | None = None  # the scaling-law knob; overrides the flavor's layer count
    args: dict[str, Any] = field(default_factory=dict)  # checked against the model's own hparams


@dataclass
class OptimConfig:
    """Dense optimizer, fused sparse optimizer and the LR schedule."""

    dense: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    sparse: Literal["rowwise_adagrad", "adagrad", "adam", "sgd"] = "rowwise_adagrad"
    sparse_lr: float = 0.05
    eps: float = 1e-8
    warmup_steps: int = 0
    decay: Literal["none", "linear", "cosine"] = "none"
    grad_clip: float = 0.0  # max global L2 norm of dense grads; 0 disables clipping


@dataclass
class TrainConfig:
    """Training loop budget and numerics."""

    epochs: int = 1
    max_steps: int = 0  # > 0 stops after this many steps, whatever `epochs` says
    max_minutes: float = (
        0.0  # > 0: also stop once training has run this long (checked every log_every steps, all ranks agree)
    )
    batch_size: int = 256  # per rank
    eval_batch_size: int = 1024
    eval_every: int = 0  # steps between evaluations; 0: only at the end
    seed: int = 0
    bf16: bool = False  # autocast the dense part
    log_every: int = 50
    collective_timeout_s: float = 600.0  # a rank stuck this long in a collective fails the job (torchrun names it)


@dataclass
class ShardingConfig:
    """How embedding tables are sharded and how the dense part is parallelised."""

    sharding_type: str | None = None  # for every table: data_parallel|table_wise|column_wise|...
    per_table: dict[str, str] = field(default_factory=dict)  # feature -> sharding type
    compute_kernel: str | None = None  # fused|dense|fused_uvm_caching|...
    dense: Literal["ddp", "fsdp2"] = "ddp"
    pipeline: bool = True  # TrainPipelineSparseDist


@dataclass
class CheckpointConfig:
    """DCP checkpoints under RUN/checkpoints/."""

    every_steps: int = 0
    every_minutes: float = 0.0
    keep_last: int = 2
    final: bool = True


@dataclass
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tensorboard: bool = True
    progress: bool = True


@dataclass
class RunConfig:
    dir: str = "runs/default"
    overwrite: bool = (
        False  # a fresh start (resume=none) into a dir holding checkpoints deletes them instead of stopping
    )


@dataclass
class Config:
    """The whole resolved run configuration, saved as ``RUN/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    resume: Literal["none", "auto"] = "none"  # auto: continue from the newest complete checkpoint
