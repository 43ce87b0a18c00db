"""Fault injection for tests: ``TERAREC_FAULT_AT=<point>:<step>[:<SIGNAL>[:<rank>]][,...]``.

At the named point of the named step the process sends itself the signal (default KILL), so a
test can land a crash exactly where a wall-clock kill rarely lands, e.g. between a checkpoint's
files and its manifest. Points: ``step`` (after a training step), ``save_start`` (the temporary
checkpoint directory exists, nothing written), ``save_files`` (every file written, no manifest),
``save_manifest`` (manifest written, not yet renamed), ``save_renamed`` (renamed, older ones not
yet pruned). ``STOP`` freezes the process (a stalled writer). Without the variable this is a no-op.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "TERAREC_FAULT_AT"


def fault_point(point: str, step: int, rank: int = 0) -> None:
    """Send the signal of every comma-separated fault spec that names this point, step and rank."""
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        parts = spec.split(":")
        sig = signal.Signals[f"SIG{parts[2]}"] if len(parts) > 2 else signal.SIGKILL
        if (parts[0], int(parts[1])) == (point, step) and (len(parts) < 4 or int(parts[3]) == rank):
            os.kill(os.getpid(), sig)
