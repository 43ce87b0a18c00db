"""The one list of third-party warnings terarec silences, each matched by source and message.

terarec fixes what it causes (the planner's topology comes from ``TopologyFactory``, its dense
storage from terarec's own estimate: ``planning.py``). What is left below are messages torch,
torchrec and fbgemm print on every healthy run, that no recipe change can avoid and that need no
action. Every filter names its source (logger or module) and the start of the message, so the
same library warning about anything else still shows. Add to this list only with the reason.
"""

from __future__ import annotations

import logging
import re
import warnings

# (logger name, message regex) of ``logging`` records dropped. A filter on a logger sees only the
# records logged through that very logger, so each entry names the logger that emits the message.
KNOWN_LOG_RECORDS: tuple[tuple[str, str], ...] = (
    # torchrec logs this for every data-parallel table (utils.add_params_from_parameter_sharding),
    # whether or not caching params were given; terarec never sets cache params
    ("torchrec.distributed.utils", r"Sharding Type is data_parallel, caching params will be ignored$"),
    # the planner's plan check logs this (via the root logger) for every data-parallel table: a
    # replicated table has no shards, so torchrec's own to_sharding_plan gives it no spec
    ("root", r"Sharding spec not found for "),
    # KeyedJaggedTensor construction calls torch.fx's is_fx_tracing(), whose deprecation notice is
    # aimed at fx users, not at torchrec's callers
    ("torch.fx._symbolic_trace", r"is_fx_tracing will return true for both fx\.symbolic_trace and torch\.export"),
)

# (category, module regex, message regex) of Python ``warnings`` ignored; the module is the one the
# warning is attributed to (the caller, after the library's stacklevel)
KNOWN_PYTHON_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # HeuristicalStorageReservation warns in its constructor whatever the arguments; its advice
    # ("pass a dense_tensor_estimate") is what planning.plan_sharding does
    (FutureWarning, r"terarec\.trainer\.planning$", r"HeuristicalStorageReservation is known to cause issues"),
    # torchrec 1.8 builds DDP with broadcast_buffers= (data-parallel tables, the dense part), which
    # torch 2.13 deprecated; the behaviour it selects is unchanged
    (FutureWarning, r"torchrec\.distributed\.", r"`broadcast_buffers` is deprecated"),
    # loading a checkpoint: DCP reads attributes of the tables' ShardedTensors (what torchrec 1.8's
    # sharded tables are); torch still supports them, the notice is for torchrec's maintainers
    (
        FutureWarning,
        r"torch\.distributed\.checkpoint\.",
        r"Please use DTensor instead and we are deprecating ShardedTensor",
    ),
    # fbgemm registers the dense kernel of data-parallel tables on the CPU key only, as a kernel
    # that runs its own autograd function, so torch's check for an Autograd-key kernel misfires;
    # tests/integration/test_parity.py shows data-parallel tables train like the unsharded model
    (
        UserWarning,
        r"torch\.autograd\.graph$",
        r"fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel was not registered",
    ),
)


class _DropKnownRecords(logging.Filter):
    """Drops a logger's records whose message matches one of ``patterns`` (from the start)."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def quiet_known_warnings() -> None:
    """Install every filter above in this process (idempotent: a second call replaces the first)."""
    by_logger: dict[str, list[str]] = {}
    for name, pattern in KNOWN_LOG_RECORDS:
        by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(None if name == "root" else name)
        for old in [f for f in logger.filters if isinstance(f, _DropKnownRecords)]:
            logger.removeFilter(old)
        logger.addFilter(_DropKnownRecords(patterns))
    for category, module, message in KNOWN_PYTHON_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
