"""``terarec sweep --predict``: the fitted law at a larger configuration, with its parameter uncertainty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ladder_result

from terarec.cli import main
from terarec.errors import UserError
from terarec.launch.scaling_fit import fit_power_law, predict
from terarec.launch.sweep import write_results
from terarec.launch.sweep_predict import predict_from_sweep, report

LAW = (7.0, 0.2, 0.40)  # L(C) = 7 C^-0.2 + 0.40
SAMPLES = 900_000


def _law(c: float) -> float:
    return LAW[0] * c ** -LAW[1] + LAW[2]


def _sweep_on_the_law(out: Path, flops: list[int], noise: list[float] | None = None) -> None:
    """A finished sweep of flavors ladder_1.. (train FLOPs/example ``flops``), losses on the law."""
    rows = [
        ladder_result(i, f, _law(f * SAMPLES) + (noise[i - 1] if noise else 0.0), SAMPLES)
        for i, f in enumerate(flops, 1)
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_results(rows, out)


def test_delta_method_error_matches_the_spread_of_refits() -> None:
    """Over 300 noise draws (sd 2e-4) on 9 points of the law, a prediction 10x beyond the largest
    point: the mean reported 1-sigma error is within 25% of the predictions' actual spread, and
    the truth lies within 1 sigma in 55-80% of draws (68% for a Gaussian)."""
    x = np.geomspace(1e10, 1e14, 9)
    target, truth = 1e15, _law(1e15)
    predictions, errors = [], []
    for seed in range(300):
        y = _law(x) + np.random.default_rng(seed).normal(0.0, 2e-4, len(x))
        value, error = predict(fit_power_law(x, y), target)
        assert error is not None
        predictions.append(value)
        errors.append(error)
    predictions, errors = np.array(predictions), np.array(errors)
    assert np.mean(errors) == pytest.approx(np.std(predictions), rel=0.25)
    assert 0.55 <= np.mean(np.abs(predictions - truth) <= errors) <= 0.80


def test_prediction_on_exact_points_is_the_law_and_the_pure_law_has_an_error_from_3_points() -> None:
    x = np.geomspace(1e10, 1e14, 6)
    value, error = predict(fit_power_law(x, _law(x)), 1e16)
    assert value == pytest.approx(_law(1e16), rel=1e-6) and error is not None and error < 1e-6
    pure = fit_power_law(x[:3], 2.5 * x[:3] ** -0.07 * np.array([1.0, 1.01, 1.0]))
    value, error = predict(pure, 1e13)
    assert value == pytest.approx(pure["a"] * 1e13 ** -pure["b"]) and error is not None and error > 0
    assert predict(fit_power_law(x[:2], _law(x[:2])), 1e13)[1] is None  # 2 points: no residuals, no error


def test_predict_at_a_compute_reads_the_sweeps_fit(tmp_path: Path) -> None:
    _sweep_on_the_law(tmp_path, [3_000_000, 9_000_000, 27_000_000, 81_000_000, 243_000_000])
    result = predict_from_sweep(tmp_path, "1e16", "wukong", lookup=_no_lookup)
    assert result["predicted"] == pytest.approx(_law(1e16), rel=1e-6) and result["predicted_err"] < 1e-6
    assert result["extrapolation"] == pytest.approx(1e16 / (243_000_000 * SAMPLES))
    assert result["fitted_range"] == [3_000_000 * SAMPLES, 243_000_000 * SAMPLES] and "source" not in result


def _no_lookup() -> list[dict[str, Any]]:
    raise AssertionError("a compute in FLOPs needs no registry")


def test_predict_at_a_flavor_uses_its_registry_flops_and_flags_another_scale(tmp_path: Path) -> None:
    flops = [3_000_000, 9_000_000, 27_000_000, 81_000_000]
    _sweep_on_the_law(tmp_path, flops)
    registry = [
        {"model": "wukong", "flavor": f"ladder_{i}", "train_flops_per_example": f} for i, f in enumerate(flops, 1)
    ]
    registry.append({"model": "wukong", "flavor": "ladder_5", "train_flops_per_example": 729_000_000})
    result = predict_from_sweep(tmp_path, "ladder_5", "wukong", lookup=lambda: registry)
    assert result["compute"] == 729_000_000 * SAMPLES and result["predicted"] == pytest.approx(_law(729e6 * SAMPLES))
    assert result["source"]["measured_vs_registry"] == {f"ladder_{i}": 1.0 for i in range(1, 5)}
    doubled = predict_from_sweep(tmp_path, "ladder_5", "wukong", samples=2 * SAMPLES, lookup=lambda: registry)
    assert doubled["compute"] == 2 * 729_000_000 * SAMPLES
    from terarec.launch.sweep_predict import report

    assert not any("warning" in line for line in report(result))
    registry[0]["train_flops_per_example"] = 1_500_000  # the sweep measured 2x the registry's FLOPs for ladder_1
    lines = report(predict_from_sweep(tmp_path, "ladder_5", "wukong", lookup=lambda: registry))
    assert any("warning: the sweep measured other FLOPs/example than the registry" in line for line in lines)
    assert "ladder_1 x2" in "".join(lines)
    with pytest.raises(UserError, match="--predict-samples 0: must be >= 1"):
        predict_from_sweep(tmp_path, "ladder_5", "wukong", samples=0, lookup=lambda: registry)
    with pytest.raises(UserError, match="--predict ladder_9: not a flavor of wukong"):
        predict_from_sweep(tmp_path, "ladder_9", "wukong", lookup=lambda: registry)


def test_predict_without_a_finished_sweep_or_a_law_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run the sweep first"):
        predict_from_sweep(tmp_path, "1e15", "wukong")
    _sweep_on_the_law(tmp_path, [3_000_000, 9_000_000, 27_000_000], noise=[0.0, 0.1, 0.2])  # loss rises
    with pytest.raises(UserError, match="no law to predict from"):
        predict_from_sweep(tmp_path, "1e15", "wukong")


def test_cli_predict_prints_the_prediction_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through ``terarec sweep --predict`` with the real ``terarec models --json`` child: ladder_5's
    registry FLOPs/example x the sweep's samples."""
    from terarec.trainer.model_factory import describe_models

    out = tmp_path / "out"
    _sweep_on_the_law(out, [3_000_000, 9_000_000, 27_000_000, 81_000_000])
    before = sorted(p.name for p in out.iterdir())
    assert main(["sweep", "--config", "wukong_ladder", "--output", str(out), "--predict", "ladder_5"]) == 0
    printed = capsys.readouterr().out
    registered = next(r for r in describe_models() if (r["model"], r["flavor"]) == ("wukong", "ladder_5"))
    compute = registered["train_flops_per_example"] * SAMPLES
    assert f"predicted eval logloss at {compute:.4g} training FLOPs: {_law(compute):.5f} +- " in printed
    assert f"ladder_5: {registered['train_flops_per_example']:,} train FLOPs/example" in printed
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "fit.json").read_text())["points"] == 4


def _two_axis_sweep(out: Path) -> list[dict[str, Any]]:
    """A finished 4 x 4 sweep (FLOPs/example 1e6..1e8 x rows 1e5..1e7, one pass each) on L(N, D); its registry."""
    grid_n, grid_d = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 4), np.geomspace(1e5, 1e7, 4)))
    rows = [
        {**ladder_result(i, int(n), _law_2d(n, d), int(d), train_rows=int(d)), "point": f"p{i}"}
        for i, (n, d) in enumerate(zip(grid_n, grid_d), 1)
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_results(rows, out)
    return [
        {"model": "wukong", "flavor": f"ladder_{i}", "train_flops_per_example": int(n)} for i, n in enumerate(grid_n, 1)
    ]


def _law_2d(n: float, d: float) -> float:
    return 0.40 + 3.2 * n**-0.3 + 0.9 * d**-0.25


def test_a_two_axis_sweep_predicts_from_its_law_of_n_and_d(tmp_path: Path) -> None:
    registry = _two_axis_sweep(tmp_path)
    result = predict_from_sweep(tmp_path, "ladder_16", "wukong", samples=10**8, lookup=lambda: registry)
    assert result["predicted"] == pytest.approx(_law_2d(1e8, 1e8), rel=1e-3) and result["predicted_err"] is None
    assert result["at"] == {"N": 1e8, "D": 1e8} and result["compute"] == pytest.approx(1e16)
    assert "L(N, D) predictions carry none" in "\n".join(report(result))
    for target, samples, why in (
        ("1e16", 10**8, "a training compute does not say N and D apart"),
        ("ladder_16", None, "pass --predict-samples"),
    ):
        with pytest.raises(UserError, match=f"on the two-axis sweep .*: {why}"):
            predict_from_sweep(tmp_path, target, "wukong", samples=samples, lookup=lambda: registry)
