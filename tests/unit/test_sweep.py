"""Sweep spec validation and the power-law fit (the training side is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.cli import main
from terarec.configs.loader import ConfigError
from terarec.launch.sweep import SweepSpec, fit_power_law, point_name


def test_power_law_fit_recovers_exponent_and_scale() -> None:
    x = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    fit = fit_power_law(x, 2.5 * x**-0.07)
    assert fit["a"] == pytest.approx(2.5) and fit["b"] == pytest.approx(-0.07) and fit["r2"] == pytest.approx(1.0)


def test_spec_expands_the_grid_and_checks_every_point(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base: wukong_synth\ngrid:\n  model.num_layers: [1, 2]\n  train.batch_size: [64, 128]\noverrides: [train.max_steps=5]\n")
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
