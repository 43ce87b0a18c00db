"""The one error boundary: every entry point turns a user mistake into one ``terarec: error:`` line and
exit 2; a relayed child's user error comes back once, whatever torchrun printed around it."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from terarec.configs.loader import ConfigError
from terarec.data_pipeline.schema import DatasetError
from terarec.errors import (
    EXIT_INTERRUPTED,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    RunFailedError,
    UserError,
    collapse_errors,
    error_line,
    parse_error_line,
    run_entry,
)
from terarec.launch.compare import CompareError
from terarec.launch.sweep import SweepError
from terarec.launch.torchrun import StderrRelay, child_user_error
from terarec.models.registry import ModelConfigError

ROOT = Path(__file__).resolve().parents[2]


def _cli(argv: list[str]) -> int:
    from terarec.cli import main

    return main(argv)


def _trainer(argv: list[str]) -> int:
    from terarec.trainer.main import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from terarec.trainer.evaluate import main

    return main(argv)


def _baseline(argv: list[str]) -> int:
    from terarec.baselines.tabular import main

    return main(argv)


ENTRY_POINTS: list[tuple[str, Callable[[list[str]], int], list[str], str]] = [
    ("cli", _cli, ["dance"], "invalid choice: 'dance'"),
    ("cli train", _cli, ["train"], "required: --config (see terarec train --help)"),
    ("cli train recipe", _cli, ["train", "--config", "nope"], "unknown recipe 'nope'"),
    ("cli eval", _cli, ["eval", "--run", "/nonexistent/run"], "not a terarec run directory"),
    ("cli eval nproc", _cli, ["eval", "--run", "x", "--nproc", "0"], "--nproc must be >= 1"),
    ("cli synth", _cli, ["synth", "--rows", "many", "--output", "x"], "invalid int value: 'many'"),
    ("cli sweep", _cli, ["sweep", "--config", "/nonexistent.yaml"], "sweep file /nonexistent.yaml not found"),
    ("cli compare", _cli, ["compare", "--data", "/nonexistent", "--models", "dlrm"], "no schema.json there"),
    ("cli launch", _cli, ["launch", "--", "train", "--config", "nope"], "unknown recipe 'nope'"),
    ("torchrun train entry", _trainer, ["--config", "nope"], "unknown recipe 'nope'"),
    ("torchrun train entry args", _trainer, [], "required: --config"),
    ("torchrun eval entry", _evaluate, ["--run-dir", "/nonexistent/run"], "not a terarec run directory"),
    ("baselines entry", _baseline, ["--kind", "svm", "--data", "x", "--output", "y"], "invalid choice: 'svm'"),
    (
        "baselines valid fraction",
        _baseline,
        ["--kind", "logreg", "--data", "x", "--output", "y", "--valid-fraction", "1.5"],
        "argument --valid-fraction: 1.5 is not in [0, 1)",
    ),
    (
        "baselines params",
        _baseline,
        ["--kind", "lightgbm", "--data", "x", "--output", "y", "--params", "[1]"],
        "argument --params: '[1]' is not a JSON object",
    ),
    (
        "baselines entry data",
        _baseline,
        ["--kind", "logreg", "--data", "/nonexistent", "--output", "y"],
        "logreg: /nonexistent/schema.json not found",
    ),
]


@pytest.mark.parametrize("entry, argv, expected", [e[1:] for e in ENTRY_POINTS], ids=[e[0] for e in ENTRY_POINTS])
def test_every_entry_point_prints_one_line_and_exits_2(
    entry: Callable[[list[str]], int], argv: list[str], expected: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """capfd: what reaches the process's stderr, as a user would see it (torchrun's @record wants a real fd)."""
    assert entry(argv) == EXIT_USAGE
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terarec: error: ") and expected in lines[0], err
    assert out == ""


def test_typed_errors_are_user_errors_and_keep_their_old_bases() -> None:
    for kind in (ConfigError, DatasetError, ModelConfigError):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError)
    from terarec.trainer.parallelize import ShardingConfigError

    assert issubclass(ShardingConfigError, UserError)
    for kind in (SweepError, CompareError):  # a failed run is not the user's mistake: exit 1
        assert issubclass(kind, RunFailedError) and not issubclass(kind, UserError)


def test_boundary_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def raising(err: BaseException) -> Callable[[], None]:
        def entry() -> None:
            raise err

        return entry

    assert run_entry(lambda: None) == 0 and run_entry(lambda: 3) == 3
    assert run_entry(raising(ConfigError("bad key\nsecond line"))) == EXIT_USAGE
    assert capsys.readouterr().err == "terarec: error: bad key / second line\n"
    assert run_entry(raising(SweepError("point x failed"))) == EXIT_RUN_FAILED
    assert capsys.readouterr().err == "terarec: error: point x failed\n"
    assert run_entry(raising(KeyboardInterrupt())) == EXIT_INTERRUPTED
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_entry(raising(ZeroDivisionError("boom")))


def test_rank_tags_and_collapsing() -> None:
    assert error_line("x", rank=0) == "terarec: error: x" and error_line("x", rank=3) == "terarec: error: [rank 3] x"
    assert parse_error_line("terarec: error: [rank 3] x") == (3, "x")
    assert parse_error_line("\rtrain: 40%|####  | terarec: error: y\n") == (0, "y")  # after a progress bar
    assert parse_error_line("INFO step 5") is None
    same_everywhere = [(1, "bad key"), (0, "bad key"), (2, "bad key")]
    assert collapse_errors(same_everywhere) == "bad key"
    assert collapse_errors([(1, "disk full"), (3, "disk full")]) == "[ranks 1,3] disk full"
    assert collapse_errors([(0, "a"), (2, "b")]) == "a; [rank 2] b"


TORCHRUN_WALL = """\
W1201 03:33:40.737000 api.py:1028] Sending process 10378 closing signal SIGTERM
Traceback (most recent call last):
  File "torch/distributed/run.py", line 1032, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
terarec.trainer.evaluate FAILED
"""


def test_relay_forwards_live_then_holds_back_torchruns_report() -> None:
    out = io.StringIO()
    relay = StderrRelay(out)
    relay.feed("INFO model dcnv2: 3")
    assert out.getvalue() == ""  # a line is forwarded once it is complete
    relay.feed("12 params\n\rtrain: 10%\rtrain: 20%")
    assert out.getvalue() == "INFO model dcnv2: 312 params\n\rtrain: 10%\r"
    relay.feed("\nterarec: error: [rank 1] bad key\nterarec: error: bad key\n" + TORCHRUN_WALL)
    assert relay.finish(failed=True) == "bad key"
    assert "ChildFailedError" not in out.getvalue() and "terarec: error" not in out.getvalue()

    crashed = io.StringIO()  # no user error: the whole report, traceback included, is shown
    relay = StderrRelay(crashed)
    relay.feed("RuntimeError: boom\n" + TORCHRUN_WALL)
    assert relay.finish(failed=True) is None and crashed.getvalue() == "RuntimeError: boom\n" + TORCHRUN_WALL

    succeeded = io.StringIO()  # an error line from a run that still succeeded is just output
    relay = StderrRelay(succeeded)
    relay.feed("terarec: error: odd\nlater\n")
    assert relay.finish(failed=False) is None and succeeded.getvalue() == "terarec: error: odd\nlater\n"


def test_child_user_error_reads_a_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("INFO x\nterarec: error: [rank 1] bad key\nterarec: error: bad key\n" + TORCHRUN_WALL)
    assert child_user_error(log) == "bad key"
    log.write_text("RuntimeError: boom\n")
    assert child_user_error(log) is None and child_user_error(tmp_path / "absent.log") is None


def test_torchrun_entry_as_a_process_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "terarec.trainer.main", "--config", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith("terarec: error: unknown recipe 'nope'") and done.stderr.count("\n") == 1
