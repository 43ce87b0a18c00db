"""Preemption: SIGTERM / SIGINT stop training at a step boundary with a checkpoint, instead of killing it.

Slurm and Kubernetes send SIGTERM (then SIGKILL after a grace period) before they take a node back;
torchrun forwards it to every worker; Ctrl-C sends SIGINT to the whole process group. The handler
only records the signal: the training loop polls :attr:`PreemptionGuard.requested` after each step,
all ranks agree on it with one collective, stop feeding the pipeline (so the loader position equals
the batches trained), write a checkpoint together and leave with :class:`Preempted`
(exit ``128 + signal``: 143 for SIGTERM, 130 for SIGINT). A second signal is not caught: it kills
the process at once, for a user who does not want to wait for the checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger("terarec")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
    """Training stopped on a signal after writing its checkpoint.

    A ``SystemExit`` so that every entry point (``terarec train``, ``python -m terarec.trainer.main``
    under torchrun and its ``@record``) exits with ``128 + signal`` and no traceback, without each
    of them knowing about preemption; ``finally`` blocks (process-group teardown, the run-dir lock)
    still run.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class PreemptionGuard:
    """While entered (main thread only), SIGTERM and SIGINT set :attr:`signum` instead of killing.

    Re-entrant use is not supported; the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        for sig in STOP_SIGNALS:  # the next one takes the default action: the process dies at once
            signal.signal(sig, signal.SIG_DFL)
        log.warning(
            "%s received: stopping after this step with a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )
