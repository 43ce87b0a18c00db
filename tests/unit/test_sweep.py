"""Sweep spec validation and the power-law fit (the training side is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.cli import main
from terarec.configs.loader import ConfigError
from terarec.launch.sweep import SweepSpec, fit_power_law, point_name


def test_power_law_fit_recovers_exponent_scale_and_floor() -> None:
    x = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 3e7])
    fit = fit_power_law(x, 40.0 * x**-0.3 + 0.42)
    assert fit["form"] == "a*C^-b+c"
    assert (
        fit["a"] == pytest.approx(40.0, rel=1e-3)
        and fit["b"] == pytest.approx(0.3, rel=1e-3)
        and fit["c"] == pytest.approx(0.42, rel=1e-3)
    )
    assert fit["rmse"] < 1e-6 and fit["b_err"] < 1e-3
    pure = fit_power_law(x[:3], 2.5 * x[:3] ** -0.07)  # too few points for 3 parameters: the pure power law
    assert pure["form"] == "a*C^-b" and pure["a"] == pytest.approx(2.5) and pure["b"] == pytest.approx(0.07)
    assert "note" not in fit and "note" not in pure


def test_a_loss_that_does_not_fall_is_flagged_not_fitted() -> None:
    """The shipped wukong_layers sweep on 1M synthetic rows: loss rises slightly with depth."""
    flops = np.array([333568, 497408, 825088, 1480448, 2791168])
    loss = np.array([0.39123, 0.39149, 0.39299, 0.39237, 0.39633])
    fit = fit_power_law(flops, loss)
    assert fit["b"] < 1e-3 and fit["loglog_slope"] > 0 and "does not fall" in fit["note"]


def test_spec_expands_the_grid_and_checks_every_point(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\n  train.batch_size: [64, "
        "128]\noverrides: [train.max_steps=5]\n"
    )
    spec = SweepSpec.load(str(path), ["train.seed=3"])
    assert len(spec.points()) == 4 and spec.overrides == ["train.max_steps=5", "train.seed=3"]
    assert point_name(spec.points()[1]) == "num_layers=1,batch_size=128"
    path.write_text("base: wukong_synth\ngrid:\n  model.num_layer: [1, 2]\n")
    with pytest.raises(ConfigError, match="model.num_layer"):
        SweepSpec.load(str(path), [])


def test_bad_sweep_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base: wukong_synth\ngird: {}\n")
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error:") and "gird" in err and "\n" not in err


@pytest.mark.parametrize(
    "name",
    [
        "wukong_layers",
        "dcnv2_layers",
        "bst_blocks",
        "wukong_layers_criteo1tb",
        "dcnv2_layers_criteo1tb",
        "bst_blocks_taobao",
    ],
)
def test_shipped_sweeps_are_valid(name: str) -> None:
    spec = SweepSpec.load(name, [])
    assert len(spec.points()) >= 3 and list(spec.grid) == ["model.num_layers"]


def test_scheduler_flag_needs_the_torchx_launcher(capsys: pytest.CaptureFixture[str]) -> None:
    from terarec.cli import main

    assert main(["sweep", "--config", "wukong_layers", "--scheduler", "slurm"]) == 2
    assert capsys.readouterr().err.strip() == "terarec: error: --scheduler needs --launcher torchx"
    assert main(["sweep", "--config", "wukong_layers", "--launcher", "torchx", "--scheduler", "pbs"]) == 2
    assert "--scheduler pbs: not a torchx scheduler (one of " in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("base: wukong_synth\ngrid: {model.num_layers: [1, 2]\n", "not valid YAML"),
        ("- base\n- grid\n", "top level must be a mapping of sweep keys"),
        (
            "base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\nnproc: abc\n",
            "'nproc' must be an integer >= 1, got 'abc'",
        ),
        ("base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\nnproc: 0\n", "'nproc' must be an integer >= 1, got 0"),
        ("base: wukong_synth\ngrid:\n  model.num_layers: 4\n", "grid key 'model.num_layers' must be a non-empty list"),
        ("base: wukong_synth\ngrid:\n  model.num_layers: []\n", "grid key 'model.num_layers' must be a non-empty list"),
        ("base: wukong_synth\ngrid:\n  model.num_layers: [1]\noverrides: x=1\n", "'overrides' must be a list"),
    ],
    ids=["malformed", "not-a-mapping", "nproc-abc", "nproc-0", "grid-scalar", "grid-empty", "overrides-string"],
)
def test_sweep_file_mistakes_are_one_line_naming_file_and_key(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        SweepSpec.load(str(path), [])
    assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"terarec: error: {path}: ") and expected in err and err.count("\n") == 1, err


def test_a_point_that_fails_with_a_user_error_is_that_error(tmp_path: Path) -> None:
    """The point's child (a real trainer process) finds the mistake: its one line, not 'exit 2, see the log'."""
    from terarec.errors import UserError
    from terarec.launch.sweep import run_point

    spec = SweepSpec("dcnv2_synth", {"train.seed": [1]}, [f"data.path={tmp_path / 'nope'}"])
    with pytest.raises(UserError) as err:
        run_point(spec, spec.points()[0], tmp_path / "point")
    assert str(err.value) == (
        f"sweep point seed=1: {tmp_path / 'nope' / 'schema.json'} not found: prepare the dataset first "
        f"(terarec prepare / terarec synth) (log: {tmp_path / 'point' / 'train.log'})"
    )
