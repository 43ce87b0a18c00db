"""The one error boundary of every terarec entry point, and the error types it maps to exit codes.

A :class:`UserError` (bad flag, config key, input file, dataset) is printed as exactly one
``terarec: error: <message>`` line on stderr and exits 2; a :class:`RunFailedError` (a sweep point
or a compared run crashed) is printed the same way and exits 1; Ctrl-C exits 130. Anything else is
a bug and keeps its traceback. ``terarec`` (cli.py), the torchrun entries (``terarec.trainer.main``,
``terarec.trainer.evaluate``) and the baselines' entry all run through :func:`run_entry`.

Under torchrun every rank that fails prints its own line; ranks other than 0 tag it
``[rank N]`` so that a process relaying the workers' output (``launch/torchrun.py``) can show an
error that every rank hit once, and a rank-specific error with its rank.

This module is a shared leaf: every layer may import it, and it imports nothing of terarec.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

ERROR_PREFIX = "terarec: error: "
_RANK_TAG = re.compile(r"\[rank (\d+)\] ")
# a process relaying a child's stderr sets this when its own stderr is a terminal: the child's
# progress bars are still meant for a person, though its stderr is a pipe
STDERR_IS_TERMINAL_ENV = "TERAREC_STDERR_IS_TERMINAL"


class UserError(Exception):
    """A mistake in the user's input or config: one line, exit 2. The message names the culprit."""


class RunFailedError(Exception):
    """A child run (a sweep point, a compared model) failed for a reason other than a user error:
    one line naming it and its log, exit 1."""


class UserArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are :class:`UserError` (one line) instead of a usage block on stderr."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def one_line(message: str) -> str:
    """``message`` on one line: a multi-line message (a YAML parser's, an exception's) joined by ' / '."""
    return " / ".join(part.strip() for part in str(message).splitlines() if part.strip())


def error_line(message: str, rank: int | None = None) -> str:
    """``terarec: error: message``, tagged ``[rank N]`` for a torchrun rank other than 0."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0") or 0)
    tag = f"[rank {rank}] " if rank else ""
    return f"{ERROR_PREFIX}{tag}{one_line(message)}"


def parse_error_line(line: str) -> tuple[int, str] | None:
    """``(rank, message)`` of a line holding an :func:`error_line` (rank 0 when untagged), else None.

    The marker may follow other text on the line: a progress bar that a worker left unterminated."""
    start = line.find(ERROR_PREFIX)
    if start < 0:
        return None
    text = line[start + len(ERROR_PREFIX) :].strip()
    tag = _RANK_TAG.match(text)
    return (int(tag.group(1)), text[tag.end() :]) if tag else (0, text)


def collapse_errors(reports: list[tuple[int, str]]) -> str:
    """The workers' error reports as one line: each distinct message once, in the order first seen;
    untagged when rank 0 reported it (every rank hit the same error), else tagged with its ranks."""
    ranks: dict[str, set[int]] = {}
    for rank, message in reports:
        ranks.setdefault(message, set()).add(rank)
    parts = []
    for message, who in ranks.items():
        if 0 in who:
            parts.append(message)
        else:
            label = "rank" if len(who) == 1 else "ranks"
            parts.append(f"[{label} {','.join(map(str, sorted(who)))}] {message}")
    return "; ".join(parts)


def stderr_is_terminal() -> bool:
    """Whether stderr reaches a person: a terminal, or a pipe of a relaying parent whose stderr is one."""
    return sys.stderr.isatty() or os.environ.get(STDERR_IS_TERMINAL_ENV) == "1"


def run_entry(entry: Callable[..., int | None], *args: object) -> int:
    """Run an entry point's body; its exit code. The one place user errors become ``terarec: error:``."""
    try:
        return int(entry(*args) or EXIT_OK)
    except UserError as err:
        print(error_line(str(err)), file=sys.stderr, flush=True)
        return EXIT_USAGE
    except RunFailedError as err:
        print(error_line(str(err)), file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("terarec: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def parse_and_run(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace], object],
    argv: list[str] | None,
) -> int:
    """A worker entry (``python -m terarec.trainer.X`` under torchrun): parse ``argv`` with the
    command's own arguments (a usage mistake is a user error) and run ``body`` inside the boundary."""

    def entry() -> None:
        parser = UserArgumentParser(prog=prog, description=description)
        add_arguments(parser)
        body(parser.parse_args(argv))

    return run_entry(entry)
