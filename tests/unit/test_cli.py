"""CLI contract: --help everywhere, one-line errors with exit code 2 for user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from terarec.cli import build_parser, main

COMMANDS = [
    [],
    ["prepare"],
    ["prepare", "criteo"],
    ["prepare", "movielens"],
    ["prepare", "taobao"],
    ["synth"],
    ["train"],
    ["eval"],
    ["sweep"],
    ["models"],
    ["compare"],
    ["launch"],
]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "terarec")
def test_help_for_every_command(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*words, "--help"])
    assert exit_.value.code == 0
    assert "usage: terarec" in capsys.readouterr().out


def test_unknown_config_key_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "dcnv2_synth", "bad.key=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'bad.key'" in err[0] and err[0].startswith("terarec: error:")


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "terarec.cli", "train", "--config", "dcnv2_synth", "bad.key=1"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "bad.key" in out.stderr and "Traceback" not in out.stderr


def test_models_json_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from terarec.models import list_models

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in rows} == {e.name for e in list_models()}
