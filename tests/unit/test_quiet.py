"""trainer/quiet.py drops exactly the known-harmless third-party messages, and planning makes none."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from terarec.configs.schema import Config
from terarec.trainer.distributed import DistInfo
from terarec.trainer.planning import plan_sharding
from terarec.trainer.quiet import KNOWN_LOG_RECORDS, KNOWN_PYTHON_WARNINGS, quiet_known_warnings


def _warned(category: type[Warning], module: str, message: str) -> list[str]:
    """Messages that reach the user when ``module`` warns ``message``, with the filters installed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(
    ("category", "module", "message"),
    [
        (FutureWarning, "terarec.trainer.planning", "HeuristicalStorageReservation is known to cause issues, ..."),
        (FutureWarning, "torchrec.distributed.embeddingbag", "`broadcast_buffers` is deprecated. Use ..."),
        (FutureWarning, "torchrec.distributed.model_parallel", "`broadcast_buffers` is deprecated. Use ..."),
        (
            FutureWarning,
            "torch.distributed.checkpoint.default_planner",
            "Please use DTensor instead and we are deprecating ShardedTensor.",
        ),
        (
            UserWarning,
            "torch.autograd.graph",
            "fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel was not registered to the ...",
        ),
    ],
)
def test_known_python_warnings_are_dropped(category: type[Warning], module: str, message: str) -> None:
    assert _warned(category, module, message) == []


@pytest.mark.parametrize(
    ("category", "module", "message"),
    [
        (FutureWarning, "torchrec.distributed.embeddingbag", "something else is deprecated"),  # other message
        (FutureWarning, "my_model", "`broadcast_buffers` is deprecated. Use ..."),  # other module
        (UserWarning, "torch.autograd.graph", "myop::lookup: an autograd kernel was not registered"),  # other op
        (DeprecationWarning, "torch.autograd.graph", "fbgemm::dense_embedding_codegen_lookup_function: an"),
    ],
)
def test_other_warnings_still_show(category: type[Warning], module: str, message: str) -> None:
    assert _warned(category, module, message) == [message]


@pytest.fixture
def captured_root() -> Iterator[list[str]]:
    """Messages that reach a handler on the root logger (where torchrec's records end up)."""
    seen: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = _Keep(logging.WARNING)
    logging.getLogger().addHandler(handler)
    quiet_known_warnings()
    quiet_known_warnings()  # idempotent: still one filter per logger
    yield seen
    logging.getLogger().removeHandler(handler)


def test_known_log_records_are_dropped_and_others_kept(captured_root: list[str]) -> None:
    logging.getLogger("torchrec.distributed.utils").warning(
        "Sharding Type is data_parallel, caching params will be ignored"
    )
    logging.getLogger("torchrec.distributed.utils").warning("Compute Kernel is dense, caching params will be ignored")
    logging.warning("Sharding spec not found for model.sparse_arch.embedding_bag_collection.t_cat_5")
    logging.getLogger("torch.fx._symbolic_trace").warning("is_fx_tracing will return true for both fx.symbolic_trace")
    logging.getLogger("torchrec.distributed.planner.types").warning("The topology was constructed directly ...")
    assert captured_root == [
        "Compute Kernel is dense, caching params will be ignored",
        "The topology was constructed directly ...",
    ]
    assert len(logging.getLogger("torchrec.distributed.utils").filters) == 1
    assert {name for name, _ in KNOWN_LOG_RECORDS} == {"torchrec.distributed.utils", "root", "torch.fx._symbolic_trace"}
    assert all(module and message for _, module, message in KNOWN_PYTHON_WARNINGS)  # never a blanket ignore


class _TwoTableModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        tables = [
            EmbeddingBagConfig(name=f"t_cat_{i}", embedding_dim=8, num_embeddings=rows, feature_names=[f"cat_{i}"])
            for i, rows in enumerate([50, 100_000])
        ]
        self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        self.top = nn.Linear(16, 1, device="meta")


def test_planning_itself_logs_and_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """The topology and dense-size warnings are fixed at their cause, not filtered (quiet.py has no
    entry for them): a real plan on a one-rank group, with a data-parallel and a table-wise table."""
    cfg = Config()
    cfg.sharding.per_table = {"cat_0": "data_parallel", "cat_1": "table_wise"}
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            quiet_known_warnings()
            plan = plan_sharding(_TwoTableModel(), cfg, info, ["cat_0", "cat_1"], [EmbeddingBagCollectionSharder()])
    finally:
        dist.destroy_process_group()
    shardings = plan.plan["ebc"]
    assert {t: shardings[t].sharding_type for t in ("t_cat_0", "t_cat_1")} == {  # type: ignore[index]
        "t_cat_0": "data_parallel",
        "t_cat_1": "table_wise",
    }
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
