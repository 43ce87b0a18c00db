"""Typed run configuration: one dataclass per section, nested under :class:`Config`.

Every field here is a config key: ``train.batch_size`` is ``Config.train.batch_size``. Recipes
(``recipes/*.yaml``) and dotted CLI overrides are checked against these types by
:mod:`terarec.configs.loader` before any process group starts, and against the range a field
declares in its ``metadata`` (the rule lives next to the key it guards):

- ``{"min": x}``: the value must be ``>= x`` (with ``"below": y``: and ``< y``); ``{"above": x}``: ``> x``;
- ``{"positive_multiple_of": n}``: ``n``, ``2n``, ...; ``"why"`` says which part of the stack needs it.

A mapping field's rule applies to each of its values; ``None`` (where a type allows it) skips the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Keys that older versions accepted but never read: a saved RUN/config.yaml may still hold them, so
# they are dropped when a config file is read (and unknown keys anywhere else).
RETIRED_KEYS: tuple[tuple[str, str], ...] = (("embeddings", "hash"), ("sharding", "pipeline"))
# torchrec's fused kernels (CPU and CUDA) and fbgemm's CUDA TBE assert `embedding_dim % 4 == 0`. Measured
# on CPU: dims 4, 8, 12, 16 train; 6 and 7 fail in torchrec's `_assert_local_cols_divisible_by_4` (2 only
# passes while the planner happens to choose a non-fused kernel, so it is refused too).
EMBEDDING_DIM_RULE = {"positive_multiple_of": 4, "why": "fbgemm's embedding kernels need it"}


@dataclass
class DataConfig:
    """Where the prepared dataset lives and how the streaming loader reads it."""

    path: str = ""  # a prepared dataset DIR (schema.json + train/ + eval/ [+ valid/])
    train_split: str = "train"
    eval_split: str = "eval"
    # model selection (periodic evals, early stopping) reads the validation rows, reported numbers the eval
    # split. > 0: the LAST fraction of the train split's rows (file order = time order, so valid sits between
    # train and eval in time, as eval follows train) is carved out as validation and not trained on;
    # 0: the dataset's `valid_split` when it has one (prepare/synth --valid-fraction), else no validation
    valid_fraction: float = field(default=0.0, metadata={"min": 0.0, "below": 1.0})
    valid_split: str = "valid"
    # > 0: train on only the first N rows of the train split (file = time order) that the validation carve
    # leaves, the same rows at every world size; the data axis of a sweep (`data.max_train_rows: [...]`).
    # The validation rows stay the same for every N. More rows than there are is an error, not a clamp:
    # a sweep point would silently repeat a smaller one. 0: all of them
    max_train_rows: int = field(default=0, metadata={"min": 0})
    # rows held for the bounded shuffle; 0 disables shuffling
    shuffle_buffer: int = field(default=16384, metadata={"min": 0})
    dense_fill: float = 0.0  # value for null dense features before the transform
    dense_transform: Literal["log1p", "none"] = "log1p"  # log(1 + max(x, 0)), as DLRM does
    # sequence features are cut to the most recent N items; 0 drops histories (an ablation)
    max_history: int = field(default=50, metadata={"min": 0})
    # loader streams per rank, each prepared by its own threads in the rank's process (0 = 1): they
    # deal the rows, so a mid-epoch resume keeps them (the loader's state checks it); memory ~3x W windows
    num_workers: int = field(default=0, metadata={"min": 0})


@dataclass
class EmbeddingsConfig:
    """Embedding tables: one per sparse feature, sized from the schema and capped here."""

    dim: int | None = field(default=None, metadata=EMBEDDING_DIM_RULE)  # None: the model flavor's embedding_dim
    # a table has min(cardinality, max_rows) rows; raw ids are taken modulo that
    max_rows: int = field(default=1_000_000, metadata={"min": 1})
    rows: dict[str, int] = field(default_factory=dict, metadata={"min": 1})  # per-feature row count overrides
    # Remedies for the one-epoch overfitting of embeddings (docs/model_quality.md); all off by default.
    # L2 on the rows a batch touches (the sparse optimizer's weight decay: untouched rows never shrink)
    l2: float = field(default=0.0, metadata={"min": 0})
    # > 0: ids seen fewer than min_count times in the train rows share one out-of-vocabulary row (row 0)
    # of their table; counts come from terarec.data_pipeline.id_counts (cached next to the dataset)
    min_count: int = field(default=0, metadata={"min": 0})
    # fixed: every table has `dim`; log2: low-cardinality tables get narrower rows (models that concatenate only)
    dim_rule: Literal["fixed", "log2"] = "fixed"


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
    lr: float = field(default=1e-3, metadata={"min": 0})
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    sparse: Literal["rowwise_adagrad", "adagrad", "adam", "sgd"] = "rowwise_adagrad"
    sparse_lr: float = field(default=0.05, metadata={"min": 0})
    eps: float = field(default=1e-8, metadata={"above": 0})  # Adam/Adagrad divide by sqrt(state) + eps
    warmup_steps: int = field(default=0, metadata={"min": 0})
    decay: Literal["none", "linear", "cosine"] = "none"
    grad_clip: float = field(default=0.0, metadata={"min": 0})  # max global L2 norm of dense grads; 0 disables clipping


@dataclass
class TrainConfig:
    """Training loop budget and numerics."""

    # A run stops at `epochs`, `max_steps` or `max_minutes`, whichever comes first:
    # steps = min(epochs * steps_per_epoch, max_steps) when max_steps > 0.
    epochs: int = field(default=1, metadata={"min": 1})
    max_steps: int = field(default=0, metadata={"min": 0})  # 0: no step cap
    # > 0: also stop once training has run this long (checked every log_every steps, all ranks agree)
    max_minutes: float = field(default=0.0, metadata={"min": 0})
    batch_size: int = field(default=256, metadata={"min": 1})  # per rank; at most a rank's share of train rows
    eval_batch_size: int = field(default=1024, metadata={"min": 1})  # clamped to a rank's share of eval rows
    # steps between evaluations (on the validation rows when there are any, else on eval); 0: only at the end
    eval_every: int = field(default=0, metadata={"min": 0})
    # stop when this validation metric has not improved for `patience` evaluations, then restore the best
    # checkpoint (kept whatever checkpoint.keep_last says) for the final eval; needs validation rows and eval_every
    early_stop: Literal["off", "logloss", "auc"] = "off"
    patience: int = field(default=3, metadata={"min": 1})  # evaluations without improvement before stopping
    seed: int = field(default=0, metadata={"min": 0})  # numpy's shuffle generators take no negative seeds
    bf16: bool = False  # autocast the dense part
    log_every: int = field(default=50, metadata={"min": 1})
    # a rank stuck this long in a collective fails the job (torchrun names it)
    collective_timeout_s: float = field(default=600.0, metadata={"above": 0})
    # re-draw every embedding row (and reset its optimizer state) at the start of each epoch after the
    # first, keeping the dense part: MEDA (Liu et al. 2024), a remedy for the one-epoch phenomenon
    reinit_embeddings_each_epoch: bool = False


@dataclass
class ShardingConfig:
    """How embedding tables are sharded and how the dense part is parallelised."""

    sharding_type: str | None = None  # for every table: data_parallel|table_wise|column_wise|...
    per_table: dict[str, str] = field(default_factory=dict)  # feature -> sharding type
    compute_kernel: str | None = None  # fused|dense|fused_uvm_caching|...
    dense: Literal["ddp", "fsdp2"] = "ddp"


@dataclass
class CheckpointConfig:
    """DCP checkpoints under RUN/checkpoints/."""

    every_steps: int = field(default=0, metadata={"min": 0})  # 0: no step-based saves
    every_minutes: float = field(default=0.0, metadata={"min": 0})  # 0: no time-based saves
    keep_last: int = field(default=2, metadata={"min": 1})  # newest checkpoints kept; older ones are deleted
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
