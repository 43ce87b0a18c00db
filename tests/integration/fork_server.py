"""Runs ``terarec.trainer.main`` in forked children of one process that imported terarec once.

A trainer process spends ~3 s importing torch/torchrec before its first step; the fault-injection
test starts dozens of them. This server pays the import once: each request line (JSON
``{"argv": [...], "log": PATH, "fault": SPEC}``) forks a child that runs the trainer with stdout and
stderr in ``log`` and ``TERAREC_FAULT_AT=fault``; the server answers ``{"pid": N}`` at once (so the
test can signal the child) and ``{"status": S}`` when it ends (``os.waitstatus_to_exitcode``:
negative for a signal).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from terarec.trainer.faults import FAULT_ENV
from terarec.trainer.main import main


def _child(request: dict) -> None:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.pop(FAULT_ENV, None)
    if request.get("fault"):
        os.environ[FAULT_ENV] = request["fault"]
    try:
        code = main(request["argv"])
    except SystemExit as stop:  # preemption exits with 128 + signal
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
