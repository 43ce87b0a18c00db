"""The one torchrun command line terarec builds (``eval --nproc``, ``launch``, sweeps, torchx)."""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, TextIO

from terarec.errors import STDERR_IS_TERMINAL_ENV, UserError, collapse_errors, parse_error_line

# restarts must not reuse the previous rendezvous store (pytorch#135712; docs/stack.md)
RESTART_SAFE_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def torchrun_command(
    module: str,
    script_args: list[str],
    nproc_per_node: int,
    nnodes: int = 1,
    max_restarts: int = 0,
    rdzv_endpoint: str = "localhost:0",
    rdzv_id: str = "terarec",
    python: str = sys.executable,
) -> list[str]:
    """``python -m torch.distributed.run ... -m MODULE ARGS`` with c10d rendezvous; the defaults
    are a single node on a free local port (what ``--standalone`` does)."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        rdzv_endpoint,
        "--rdzv_id",
        rdzv_id,
        "--nnodes",
        str(nnodes),
        "--nproc_per_node",
        str(nproc_per_node),
        "--max-restarts",
        str(max_restarts),
        "-m",
        module,
        *script_args,
    ]


def trainer_command(script_args: list[str], nproc: int) -> list[str]:
    """``terarec train``'s process: torchrun for more than one process, plain python for one."""
    if nproc > 1:
        return torchrun_command("terarec.trainer.main", script_args, nproc)
    return [sys.executable, "-m", "terarec.trainer.main", *script_args]


def run_child(command: list[str], log_file: Path | None = None, threads: int | None = None) -> int:
    """Run ``command`` (restart-safe environment); its exit code.

    ``threads``: the child's intra-op threads (``OMP_NUM_THREADS``, which torch reads at start), for
    children that share the cores with others started beside them; None leaves torch's default.

    With ``log_file``, stdout and stderr go there (:func:`child_user_error` reads a user error back).
    Without, the child runs in the foreground with its stderr relayed as it comes; when the child
    fails with a user error (its workers' ``terarec: error:`` lines), that error is raised as one
    :class:`UserError` and torchrun's report of the failed workers is held back: a user mistake is
    one line, not a ChildFailedError wall. Any other failure is shown whole.
    """
    env = {**os.environ, **RESTART_SAFE_ENV}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if _nproc_per_node(command) > 1:  # torchrun's own default for several workers, minus its banner about it
        env.setdefault("OMP_NUM_THREADS", "1")
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "w") as out:
            return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if sys.stderr.isatty():
        env[STDERR_IS_TERMINAL_ENV] = "1"  # the child's stderr is our pipe, its progress bar still meant for a person
    relay = StderrRelay(sys.stderr)
    with subprocess.Popen(command, stderr=subprocess.PIPE, env=env) as child:
        assert child.stderr is not None
        try:
            relay.pump(child.stderr)
        except KeyboardInterrupt:  # the child got the same Ctrl-C: let it wind down and say its last words
            relay.pump(child.stderr)
            child.wait()
            relay.finish(failed=False)  # everything it said, held or not
            raise
        code = child.wait()
    message = relay.finish(failed=code != 0)
    if message:
        raise UserError(message)
    return code


def _nproc_per_node(command: list[str]) -> int:
    """The workers per node of a :func:`torchrun_command` (0 for any other command)."""
    if "torch.distributed.run" not in command or "--nproc_per_node" not in command:
        return 0
    value = command[command.index("--nproc_per_node") + 1]
    return int(value) if value.isdigit() else 0


def child_user_error(log_file: Path) -> str | None:
    """The user error a failed child logged into ``log_file`` (its ranks' lines collapsed into one), or None."""
    if not log_file.is_file():
        return None
    lines = log_file.read_text(errors="replace").splitlines()
    reports = [report for line in lines if (report := parse_error_line(line)) is not None]
    return collapse_errors(reports) if reports else None


class StderrRelay:
    """Copies a child's stderr to ``out`` as it comes, up to its first ``terarec: error:`` line; from
    there on it holds the text back until the child has ended. :meth:`finish` then either returns the
    user error (the held text, e.g. torchrun's ChildFailedError report, is dropped) or writes it out."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.held: list[str] | None = None  # None while forwarding
        self.reports: list[tuple[int, str]] = []  # (rank, message) of every error line seen
        self._pending = ""  # text after the last line end: a line may arrive in pieces
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def pump(self, stream: IO[bytes]) -> None:
        """Relay ``stream`` until it closes (the child and every worker sharing it have ended)."""
        while chunk := os.read(stream.fileno(), 65536):
            self.feed(self._decoder.decode(chunk))
        self.feed(self._decoder.decode(b"", final=True))

    def feed(self, text: str) -> None:
        """Relay complete lines (ended by \\n, or \\r: progress bars redraw a line); keep the rest pending."""
        self._pending += text
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        for line in ready.splitlines(keepends=True):
            self._take(line)

    def _take(self, line: str) -> None:
        report = parse_error_line(line)
        if report is not None:
            self.reports.append(report)
            if self.held is None:
                self.held = []
        if self.held is not None:
            self.held.append(line)
        else:
            self.out.write(line)
            self.out.flush()

    def finish(self, failed: bool) -> str | None:
        """After the child ended: the collapsed user error if it failed with one, else None (and the
        held text written out)."""
        if self._pending:
            self._take(self._pending)
            self._pending = ""
        if failed and self.reports:
            return collapse_errors(self.reports)
        self.out.write("".join(self.held or []))
        self.out.flush()
        self.held = None
        return None
