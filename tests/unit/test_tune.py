"""``compare --tune``: the search spaces, the budget accounting and the checks before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from terarec.cli import main
from terarec.configs.loader import load_config
from terarec.configs.recipe_sizes import RECIPES_BY_SIZE
from terarec.configs.search_spaces import BATCH_KEY, SEARCH_SPACES, fitting, search_space
from terarec.launch.tune import _suggest, budget, objective, override_value, render_tuning, samples_seen


def _values(dim) -> list:
    return list(dim.choices) if dim.choices else [dim.low, dim.high]


@pytest.mark.parametrize("model", ["dlrm", "dcnv2", "wukong", "bst"])
@pytest.mark.parametrize("size", ["small", "1m", "1tb"])
def test_every_value_of_a_deep_space_is_a_valid_config_of_its_recipe(model: str, size: str) -> None:
    recipe = RECIPES_BY_SIZE[model][size]
    for dim in search_space(model):
        for value in _values(dim):
            value = int(value) if dim.integer else value
            cfg = load_config(recipe, [f"{dim.key}={override_value(value)}"])
            section, _, rest = dim.key.partition(".")
            got = getattr(cfg, section)
            for part in rest.split("."):
                got = got[part] if isinstance(got, dict) else getattr(got, part)
            expected = json.loads(value) if isinstance(value, str) else value
            assert got == expected, (dim.key, value, got)


def test_spaces_cover_the_issue_dimensions() -> None:
    keys = {name: {d.key for d in dims} for name, dims in SEARCH_SPACES.items()}
    for model in ("dlrm", "dcnv2", "wukong", "bst"):
        assert {"optim.lr", "optim.sparse_lr", "embeddings.dim", "optim.weight_decay", BATCH_KEY} <= keys[model]
        assert "model.args.top_mlp" in keys[model]  # width
    assert {"model.num_layers"} <= keys["dcnv2"] & keys["wukong"] & keys["bst"]  # depth
    assert keys["lightgbm"] == {"num_leaves", "learning_rate", "min_data_in_leaf", "feature_fraction"}
    assert all(d.low <= d.high for dims in SEARCH_SPACES.values() for d in dims)
    assert all(d.choices[0] % 4 == 0 for d in SEARCH_SPACES["dlrm"] if d.key == "embeddings.dim")


def test_batch_sizes_that_do_not_fit_the_train_rows_are_left_out() -> None:
    space = fitting(search_space("dlrm"), max_batch=200)
    assert next(d for d in space if d.key == BATCH_KEY).choices == (64, 128)
    assert next(d for d in fitting(search_space("dlrm"), 10) if d.key == BATCH_KEY).choices == (64,)
    assert [d.key for d in space] == [d.key for d in search_space("dlrm")]


def test_sampled_params_stay_in_the_space_and_are_seeded() -> None:
    space = search_space("dcnv2")

    def sample(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for _ in range(5):
            trial = study.ask()
            out.append(_suggest(trial, space))
            study.tell(trial, 0.5)
        return out

    first = sample(3)
    assert first == sample(3) and first != sample(4)
    for params in first:
        for dim in space:
            value = params[dim.key]
            assert value in dim.choices if dim.choices else dim.low <= value <= dim.high
            assert isinstance(value, int) if dim.integer else True


def test_budget_sums_trials_and_final_runs() -> None:
    trials = [
        {"samples": 1000, "train_flops_per_example": 300, "wall_s": 2.0},
        {"samples": 500, "train_flops_per_example": 600, "wall_s": 1.5},
    ]
    finals = [{"samples": 2000, "train_flops_per_example": 300, "wall_s": 4.0}]
    assert budget(trials, finals) == {
        "trials": 2,
        "samples_seen": 3500,
        "train_flops": 1000 * 300 + 500 * 600 + 2000 * 300,
        "wall_s": 7.5,
    }
    trees = [{"samples": 800, "rounds_trained": 40, "wall_s": 1.0}]
    assert samples_seen(trees[0]) == 32_000  # a boosting round reads every train row
    assert budget(trees, trees) == {"trials": 1, "samples_seen": 64_000, "train_flops": None, "wall_s": 2.0}


def test_float_overrides_read_back_as_floats() -> None:
    for value in (1e-07, 2.5e-05, 0.001, 0.3, 1e20):
        assert load_config("dlrm_criteo10k", [f"optim.lr={override_value(value)}"]).optim.lr == value
    assert override_value(64) == "64" and override_value("[128, 1]") == "[128, 1]"


def test_objective_is_the_validation_logloss_never_eval() -> None:
    model = {"logloss": 0.1, "early_stop": {"best_value": 0.4, "valid": {"logloss": 0.4, "auc": 0.7}}}
    assert objective(model) == 0.4
    assert objective({"logloss": 0.1, "valid": {"logloss": 0.3}}) == 0.3


def test_budget_table_is_rendered_only_for_tuned_results() -> None:
    tuning = {
        "trials": 2,
        "best_trial": 1,
        "best_valid_logloss": 0.45,
        "params": {"optim.lr": 0.00123456, "train.batch_size": 128},
        "samples_seen": 3500,
        "train_flops": 1.2e9,
        "wall_s": 7.5,
    }
    report = {"tune": 2, "results": [{"name": "dlrm", "tuning": tuning}, {"name": "logreg"}]}
    table = render_tuning(report)
    assert "| dlrm | 2 | 1 | 0.4500 | 3,500 | 1.2e+09 | 7.5 | optim.lr=0.00123, train.batch_size=128 |" in table
    assert "logreg" not in table and render_tuning({"results": [{"name": "x"}]}) == ""


def test_tuning_without_validation_rows_stops_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "schema.json").write_text(json.dumps({"dense": [], "sparse": [], "rows": {"train": 1000, "eval": 200}}))
    assert main(["compare", "--data", str(tmp_path), "--models", "dlrm", "--tune", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error: compare --tune selects on validation rows") and "\n" not in err
    assert "data.valid_fraction=0.1" in err and "--valid-fraction" in err
    assert main(["compare", "--data", str(tmp_path), "--models", "dlrm", "--tune", "-1"]) == 2
    assert "--tune -1" in capsys.readouterr().err


def test_a_trial_interrupted_by_a_crash_is_asked_again_with_its_params(tmp_path: Path) -> None:
    from terarec.launch.tune import _finished, _requeue_interrupted, _study

    space = search_space("lightgbm")
    study = _study(tmp_path / "study.journal", "lightgbm", 0, 5)
    done = study.ask()
    study.tell(done, 0.5)
    crashed = study.ask()
    params = _suggest(crashed, space)  # ... and the process died before tell
    again = _study(tmp_path / "study.journal", "lightgbm", 0, 5)  # the re-run
    _requeue_interrupted(again)
    retry = again.ask()
    assert _suggest(retry, space) == params and retry.user_attrs["resumes"] == crashed.number
    assert retry.number == crashed.number + 1 and [t.number for t in _finished(again, 5)] == [done.number]


def _dataset(tmp_path: Path, rows: dict[str, int]) -> str:
    (tmp_path / "schema.json").write_text(json.dumps({"dense": [], "sparse": [], "rows": rows}))
    return str(tmp_path)


def test_objective_of_a_run_without_a_validation_logloss_is_nan() -> None:
    import math

    diverged = {"logloss": 0.1, "early_stop": {"best_step": -1, "valid": {}}}
    assert math.isnan(objective(diverged)) and math.isnan(objective({"valid": {}}))
    assert math.isnan(objective({"early_stop": {"best_step": 4, "valid": {}}}))


def test_trials_count_the_rows_the_trainer_trains_on(tmp_path: Path) -> None:
    from terarec.launch.compare import CompareSpec, Entry
    from terarec.launch.tune import _base_config, _train_rows

    data = _dataset(tmp_path, {"train": 100000, "eval": 2000})
    overrides = ["data.max_train_rows=200", "data.valid_fraction=0.1"]
    spec = CompareSpec(data, [Entry("dlrm", "model", "dlrm_criteo10k")], [0], 1, overrides, tune=2)
    assert _train_rows(spec, _base_config(spec, spec.entries[0])) == 200
    spec.overrides = ["data.valid_fraction=0.1"]
    assert _train_rows(spec, _base_config(spec, spec.entries[0])) == 90000


def test_a_key_the_user_fixes_on_a_re_run_wins_and_changes_the_study(tmp_path: Path) -> None:
    from terarec.launch.compare import CompareSpec, Entry
    from terarec.launch.tune import STUDY_FILE, _study, plan_trials, with_params

    data = _dataset(tmp_path, {"train": 10000, "valid": 1000, "eval": 2000})
    spec = CompareSpec(data, [Entry("dlrm", "model", "dlrm_criteo10k")], [0], 1, ["optim.lr =0.001"], tune=2)
    final = with_params(spec, spec.entries[0], {"optim.lr": 0.0042, "train.batch_size": 128}, "dlrm")
    cfg = load_config(final.recipe, spec.model_overrides(0, tmp_path / "r", final))
    assert cfg.optim.lr == 0.001 and cfg.train.batch_size == 128
    study = _study(tmp_path / "out" / "tune" / "dlrm" / STUDY_FILE, "dlrm", 0, 2)  # the earlier run searched lr
    trial = study.ask()
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    study.tell(trial, 0.5)
    (planned,) = plan_trials(spec, tmp_path / "out", None)["dlrm"]
    assert planned.decision.action == "changed" and "optim.lr" in planned.decision.detail


def _lightgbm_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # -> CompareSpec
    import terarec.launch.tune as tune
    from terarec.launch.compare import CompareSpec, Entry

    monkeypatch.setattr(tune, "baseline_valid_fraction", lambda spec: 0.1)
    return CompareSpec(str(tmp_path), [Entry("lightgbm", "baseline", "lightgbm")], [0], tune=2)


def test_a_failed_trial_is_failed_and_a_re_run_draws_new_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terarec.launch.tune as tune
    from terarec.errors import UserError

    spec, asked = _lightgbm_spec(tmp_path, monkeypatch), []

    def failing(spec, entry, seed, planned):  # noqa: ANN001, ANN202
        asked.append(dict(entry.params))
        raise UserError("lightgbm: num_leaves too large for this data")

    monkeypatch.setattr(tune, "_run_baseline", failing)
    for _ in range(2):
        with pytest.raises(UserError, match="num_leaves"):
            tune.tune_entry(spec, spec.entries[0], tmp_path / "tune", None)
    study = tune._study(tmp_path / "tune" / tune.STUDY_FILE, "lightgbm", 0, 2)
    states = [(t.state, "num_leaves" in t.user_attrs.get(tune.FAILED_ATTR, "")) for t in study.get_trials()]
    assert states == [(optuna.trial.TrialState.FAIL, True)] * 2 and asked[0] != asked[1]


def test_asking_stops_after_three_times_the_trials_when_every_run_diverges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terarec.launch.tune as tune
    from terarec.errors import UserError

    spec, runs = _lightgbm_spec(tmp_path, monkeypatch), []
    monkeypatch.setattr(tune, "_run_baseline", lambda *args: runs.append(1) or {"valid": {}})
    with pytest.raises(UserError, match=r"asked 6 trials and 6 failed before 2 finished: trial 0 has no valid"):
        tune.tune_entry(spec, spec.entries[0], tmp_path / "tune", None)
    assert len(runs) == 6
