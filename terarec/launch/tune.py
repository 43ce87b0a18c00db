"""``terarec compare --tune N``: N optuna trials per model (and LightGBM), selected on the validation
rows only, before the chosen configs train over the seeds.

Every deep model and LightGBM gets the same number of trials from its space in
``terarec.configs.search_spaces`` (optuna's TPE seeded with the first seed: its first
``startup_trials(N)`` trials are random, TPE models the rest; keys the user fixes with a ``key=value``
override are not searched). A resumed study re-seeds the sampler (the seed plus the trials already
asked), so the trials it adds are not those an uninterrupted study would have drawn (same space, same
selection), and trials whose runs failed are not drawn again.
A trial is a normal run in its own process under ``OUT/tune/NAME/trial_K`` (the first seed), stopping
early on the validation rows (``train.early_stop=logloss``, evaluated ``EVALS_PER_EPOCH`` times an epoch unless the
user set ``train.eval_every``); LightGBM's trials grow trees until the validation logloss stops improving.
A trial's objective is its validation logloss and nothing else: eval numbers are reported, never read
for selection. The best trial's config then trains over ``--seeds`` as an untuned compare does (with
the same early stopping), and eval is reported.

Resumable: the study is an optuna journal file (``OUT/tune/NAME/study.journal``: append-only, no
server, a crash loses at most the trial in flight). A re-run continues it; a finished trial counts
only when its run dir still holds the run its resolved config and the dataset's fingerprint say
(``terarec.launch.reuse``) and the study's recorded space is the one searched now (a key the user
fixes on a re-run changes it), checked for every model before anything trains; changed ones stop the
command (``--on-change stop``) or the model's whole study is moved aside and tuned again (``rerun``).
A trial interrupted mid-run is asked again with the same parameters and continues its run dir; a
trial whose run fails is told FAIL (recorded as ``failed``) and the command stops with the run's error;
a re-run draws new parameters instead. A trial that finishes without a validation logloss (diverged)
is FAIL too and tuning goes on, up to ``MAX_ASKS_PER_TRIAL`` x N asks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terarec.configs.loader import (
    ConfigError,
    config_to_dict,
    has_validation_rows,
    load_config,
    override_key,
    train_rows,
)
from terarec.configs.search_spaces import SEARCH_SPACES, Dimension, fitting, search_space
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import RunFailedError, UserError
from terarec.launch.compare import (
    BASELINES,
    CompareSpec,
    Entry,
    _baseline_settings,
    _recorded_baseline_settings,
    _run_baseline,
    _run_model,
)
from terarec.launch.reuse import Decision, Identity, Planned, decide, move_aside, stop_on_changes

log = logging.getLogger("terarec")
# the baselines with a search space (logreg has none: it has no early stopping to tune against)
TUNED_BASELINES = tuple(kind for kind in BASELINES if kind in SEARCH_SPACES)
EVALS_PER_EPOCH = 4  # validation evaluations per epoch of a trial (early stopping's cadence)
STUDY_FILE = "study.journal"
SPACE_ATTR = "space"  # the study's user_attr recording the searched space (key -> Dimension.describe())
FAILED_ATTR = "failed"  # a trial's user_attr: its run failed with this error (never asked again)
MAX_ASKS_PER_TRIAL = 3  # one invocation asks at most this many trials per --tune N before giving up


@dataclass
class Tuned:
    """One model's finished study: the chosen trial and what every trial cost."""

    entry: Entry  # the entry the seeds run: the best trial's overrides (models) or params (LightGBM)
    best_trial: int
    best_valid_logloss: float
    params: dict[str, Any]
    trials: list[dict[str, Any]]  # each finished trial's metrics.json, by trial number


def tuned_entries(spec: CompareSpec) -> list[Entry]:
    """The entries ``--tune`` searches: every deep model and each baseline with a search space."""
    return [e for e in spec.entries if e.kind == "model" or e.recipe in TUNED_BASELINES]


def _user_keys(spec: CompareSpec) -> set[str]:
    return {override_key(o) for o in spec.overrides}


def _base_config(spec: CompareSpec, entry: Entry) -> Any:
    return load_config(entry.recipe, spec.model_overrides(spec.seeds[0], Path("unused"), entry))


def _train_rows(spec: CompareSpec, cfg: Any) -> int:
    """Rows a trial trains on: the trainer's rule (``data.max_train_rows``, else the carve's rest)."""
    return train_rows(cfg, DatasetSchema.load(spec.data, check_parts=False).split_rows)


def check_tunable(spec: CompareSpec) -> None:
    """Before anything trains: every tuned model has a search space and validation rows to select on."""
    rows = DatasetSchema.load(spec.data, check_parts=False).split_rows
    for entry in spec.entries:
        if entry.kind != "model":
            continue
        cfg = _base_config(spec, entry)
        if cfg.model.name not in SEARCH_SPACES:
            raise ConfigError(f"compare --tune: no search space for model '{cfg.model.name}' ({entry.name})")
        if not has_validation_rows(cfg, rows):
            raise ConfigError(
                f"compare --tune selects on validation rows and {spec.data} has none for {entry.name}: pass "
                "data.valid_fraction=0.1 or prepare the dataset with --valid-fraction 0.1"
            )
        if cfg.train.early_stop == "off" and "train.early_stop" in _user_keys(spec):
            raise ConfigError("compare --tune stops every trial early on valid: drop train.early_stop=off")


def space_for(spec: CompareSpec, entry: Entry) -> tuple[Dimension, ...]:
    """The entry's searched dimensions: without the user's fixed keys and batch sizes that do not fit."""
    if entry.kind == "baseline":
        return search_space(entry.recipe)
    cfg = _base_config(spec, entry)
    fixed = _user_keys(spec)
    space = fitting(search_space(cfg.model.name), _train_rows(spec, cfg) // spec.nproc)
    return tuple(d for d in space if d.key not in fixed)


def baseline_valid_fraction(spec: CompareSpec) -> float:
    """LightGBM selects on the deep models' validation rows: the first model's ``data.valid_fraction``
    (0: the dataset's valid split)."""
    model = next(e for e in spec.entries if e.kind == "model")
    return float(_base_config(spec, model).data.valid_fraction)


def selection_overrides(spec: CompareSpec, entry: Entry, params: dict[str, Any]) -> list[str]:
    """Early stopping on valid for a model run with ``params`` (the user's own settings win)."""
    user = _user_keys(spec)
    out = [] if "train.early_stop" in user else ["train.early_stop=logloss"]
    if "train.eval_every" not in user:
        cfg = _base_config(spec, dataclasses.replace(entry, overrides=_overrides(params)))
        steps = _train_rows(spec, cfg) // (cfg.train.batch_size * spec.nproc)
        out.append(f"train.eval_every={max(1, steps // EVALS_PER_EPOCH)}")
    return out


def _overrides(params: dict[str, Any]) -> list[str]:
    return [f"{key}={override_value(value)}" for key, value in params.items()]


def override_value(value: Any) -> str:
    """``value`` as the config loader's YAML reads it back: YAML 1.1 takes ``1e-07`` (no dot) for a
    string, so a float always gets its dot (``1.0e-07``)."""
    text = repr(value) if isinstance(value, float) else str(value)
    return text.replace("e", ".0e", 1) if isinstance(value, float) and "e" in text and "." not in text else text


def with_params(spec: CompareSpec, entry: Entry, params: dict[str, Any], name: str) -> Entry:
    """``entry`` running ``params``: overrides for a model, LightGBM parameters selecting on valid."""
    if entry.kind == "baseline":
        return dataclasses.replace(entry, name=name, params=dict(params), valid_fraction=baseline_valid_fraction(spec))
    fixed = _user_keys(spec)  # a key the user fixes wins over an older study's value for it
    params = {key: value for key, value in params.items() if key not in fixed}
    return dataclasses.replace(
        entry, name=name, overrides=[*selection_overrides(spec, entry, params), *_overrides(params)]
    )


def as_trial(spec: CompareSpec, entry: Entry, params: dict[str, Any], name: str) -> Entry:
    """A tuning trial of ``entry`` with ``params`` (:func:`with_params`), marked as a trial."""
    return dataclasses.replace(with_params(spec, entry, params, name), tuning_trial=True)


def objective(metrics: dict[str, Any]) -> float:
    """A finished trial's validation logloss (models: at the early-stopping best step); NaN (optuna: FAIL)
    when it has none, e.g. every validation pass of a diverged run was NaN."""
    stop = metrics.get("early_stop")
    if stop is not None and stop.get("best_step", 0) < 0:
        return float("nan")
    value = (stop if stop is not None else metrics).get("valid", {}).get("logloss")
    return float("nan") if value is None else float(value)


def startup_trials(tune: int) -> int:
    """TPE's random trials before it models: half the budget (at most optuna's default 10), so a small
    ``--tune N`` is not all random search."""
    return max(1, min(tune // 2, 10))


def _study(path: Path, name: str, seed: int, tune: int) -> Any:  # -> optuna.Study
    """The journal-backed study at ``path``; its sampler seeded with ``seed`` plus the trials already asked."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # compare logs each trial itself
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name,
        storage=JournalStorage(JournalFileBackend(str(path))),
        direction="minimize",
        load_if_exists=True,
    )
    # offset by the trials already asked: a re-run after failed trials must not draw their params again
    asked = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed + asked, n_startup_trials=startup_trials(tune))
    return study


def _finished(study: Any, limit: int) -> list[Any]:
    """The first ``limit`` finished trials by number: ``--tune N`` selects among N even when an
    earlier, longer study left more."""
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)[:limit]


def _suggest(trial: Any, space: tuple[Dimension, ...]) -> dict[str, Any]:
    for dim in space:
        if dim.choices:
            trial.suggest_categorical(dim.key, list(dim.choices))
        elif dim.integer:
            trial.suggest_int(dim.key, int(dim.low), int(dim.high), log=dim.log)
        else:
            trial.suggest_float(dim.key, dim.low, dim.high, log=dim.log)
    return {dim.key: trial.params[dim.key] for dim in space}


def _identity_decision(spec: CompareSpec, entry: Entry, run_dir: Path, fingerprint: str | None) -> Decision:
    seed = spec.seeds[0]
    if entry.kind == "model":
        config = config_to_dict(load_config(entry.recipe, spec.model_overrides(seed, run_dir, entry)))
        return decide(run_dir, Identity(config, fingerprint))
    return decide(run_dir, Identity(_baseline_settings(spec, entry, seed), fingerprint), _recorded_baseline_settings)


def _searched(space: tuple[Dimension, ...]) -> dict[str, str]:
    """The study's record of its space: key -> ``Dimension.describe()``."""
    return {dim.key: dim.describe() for dim in space}


def _space_change(spec: CompareSpec, entry: Entry, study: Any, params: dict[str, Any]) -> str | None:
    """Why a finished trial no longer belongs to the study searched now (None: it does)."""
    recorded, now = study.user_attrs.get(SPACE_ATTR), _searched(space_for(spec, entry))
    fixed = sorted(set(params) & _user_keys(spec))
    if fixed:
        return f"it searched {', '.join(fixed)}, which the overrides now fix"
    if recorded != now:
        return f"its study searched {recorded or 'an unrecorded space'}, now {now}"
    return None


def plan_trials(spec: CompareSpec, output: Path, fingerprint: str | None) -> dict[str, list[Planned]]:
    """Per tuned entry, its study's finished trials and whether each may count again (reuse) or not."""
    planned: dict[str, list[Planned]] = {}
    for entry in tuned_entries(spec):
        tune_dir = output / "tune" / entry.name
        if not (tune_dir / STUDY_FILE).is_file():
            continue
        study = _study(tune_dir / STUDY_FILE, entry.name, spec.seeds[0], spec.tune)
        planned[entry.name] = []
        for trial in _finished(study, spec.tune):
            name, run_dir = f"{entry.name} trial {trial.number}", tune_dir / f"trial_{trial.number}"
            change = _space_change(spec, entry, study, trial.params)
            if change is not None:
                decision = Decision("changed", change)
            else:
                decision = _identity_decision(spec, as_trial(spec, entry, trial.params, name), run_dir, fingerprint)
            if decision.action != "reuse":
                decision = Decision("changed", decision.detail or f"its finished run is no longer in {run_dir}")
            planned[entry.name].append(Planned(name, run_dir, decision))
    return planned


def tune_all(spec: CompareSpec, output: Path, fingerprint: str | None, on_change: str) -> dict[str, Tuned]:
    """Every tuned entry's study, continued to ``spec.tune`` finished trials (all checked first)."""
    planned = plan_trials(spec, output, fingerprint)
    stop_on_changes([p for trials in planned.values() for p in trials], on_change, "tuning trial")
    for name, trials in planned.items():
        if any(p.decision.action == "changed" for p in trials):
            log.info("%s: its study holds changed trials: moved to %s", name, move_aside(output / "tune" / name))
    return {
        entry.name: tune_entry(spec, entry, output / "tune" / entry.name, fingerprint) for entry in tuned_entries(spec)
    }


def _requeue_interrupted(study: Any) -> None:
    """A trial left running by a crash is failed and asked again with its parameters (its run dir follows).
    A trial whose run failed is told FAIL with ``FAILED_ATTR`` at once, so it is never running here."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        if FAILED_ATTR not in trial.user_attrs:
            study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number})


def _run_trial(spec: CompareSpec, entry: Entry, tune_dir: Path, fingerprint: str | None, trial: Any) -> float:
    """One trial's run and its objective; a failed run tells the trial FAIL (``FAILED_ATTR``) and re-raises."""
    from optuna.trial import TrialState

    params = _suggest(trial, space_for(spec, entry))
    run_dir, earlier = tune_dir / f"trial_{trial.number}", trial.user_attrs.get("resumes")
    if earlier is not None and (tune_dir / f"trial_{earlier}").is_dir() and not run_dir.exists():
        (tune_dir / f"trial_{earlier}").rename(run_dir)  # continue the interrupted run in place
    trial_entry = as_trial(spec, entry, params, f"{entry.name} trial {trial.number}")
    planned = Planned(trial_entry.name, run_dir, _identity_decision(spec, trial_entry, run_dir, fingerprint))
    run = _run_model if entry.kind == "model" else _run_baseline
    try:
        value = objective(run(spec, trial_entry, spec.seeds[0], planned))
    except (UserError, RunFailedError) as error:
        trial.set_user_attr(FAILED_ATTR, str(error))
        trial.study.tell(trial, state=TrialState.FAIL)
        raise
    log.info("%s: valid logloss %.5f with %s", trial_entry.name, value, params)
    return value


def tune_entry(spec: CompareSpec, entry: Entry, tune_dir: Path, fingerprint: str | None) -> Tuned:
    """Run trials until ``spec.tune`` have finished; the best by validation logloss."""
    study = _study(tune_dir / STUDY_FILE, entry.name, spec.seeds[0], spec.tune)
    _requeue_interrupted(study)
    study.set_user_attr(SPACE_ATTR, _searched(space_for(spec, entry)))
    asks = 0
    failures: list[str] = []  # why each failed trial failed, for the error when asking gives up
    while len(_finished(study, spec.tune)) < spec.tune:
        if asks >= MAX_ASKS_PER_TRIAL * spec.tune:
            raise UserError(
                f"compare --tune: {entry.name} asked {asks} trials and {len(failures)} failed before {spec.tune} "
                f"finished: {'; '.join(failures[:3])}"
            )
        trial, asks = study.ask(), asks + 1
        value = _run_trial(spec, entry, tune_dir, fingerprint, trial)
        study.tell(trial, value)  # NaN: optuna records FAIL
        if math.isnan(value):
            failures.append(f"trial {trial.number} has no valid logloss (diverged?)")
    finished = _finished(study, spec.tune)
    best = min(finished, key=lambda t: (t.value, t.number))
    trials = [_metrics(tune_dir / f"trial_{t.number}") for t in finished]
    log.info(
        "%s: best of %d trials is trial %d (valid logloss %.5f)", entry.name, len(finished), best.number, best.value
    )
    return Tuned(with_params(spec, entry, best.params, entry.name), best.number, best.value, dict(best.params), trials)


def _metrics(run_dir: Path) -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    return loaded


def samples_seen(run: dict[str, Any]) -> int:
    """Training examples a run processed: a boosted model reads its train rows once per round."""
    return int(run.get("samples", 0)) * int(run.get("rounds_trained", 1))


def budget(trials: list[dict[str, Any]], finals: list[dict[str, Any]]) -> dict[str, Any]:
    """What a model's result cost, trials and final runs together: samples seen, training FLOPs
    (``train_flops_per_example x samples``; None for models without it, i.e. trees) and run wall time."""
    runs = [*trials, *finals]
    flops = [r.get("train_flops_per_example") for r in runs]
    known = [int(f) * int(r["samples"]) for f, r in zip(flops, runs) if f is not None]
    return {
        "trials": len(trials),
        "samples_seen": sum(samples_seen(r) for r in runs),
        "train_flops": sum(known) if len(known) == len(runs) else None,
        "wall_s": float(sum(float(r.get("wall_s", 0.0)) for r in runs)),
    }


def tuning_record(tuned: Tuned, finals: list[dict[str, Any]]) -> dict[str, Any]:
    """compare.json's ``tuning`` of one result: the choice and the budget."""
    return {
        "best_trial": tuned.best_trial,
        "best_valid_logloss": tuned.best_valid_logloss,
        "params": tuned.params,
        "trial_valid_logloss": [objective(t) for t in tuned.trials],
        **budget(tuned.trials, finals),
    }


def render_tuning(report: dict[str, Any]) -> str:
    """compare.md's budget table of a tuned comparison ('' when nothing was tuned)."""
    tuned = [r for r in report["results"] if "tuning" in r]
    if not tuned:
        return ""
    lines = [
        "",
        f"## Tuning budgets (`--tune {report.get('tune')}`: trials selected on valid logloss, then the seeds)",
        "",
        "Samples seen, training FLOPs and wall time sum every trial and final run (run wall time; "
        "the machine may be shared). LightGBM's samples are train rows x boosting rounds; its FLOPs are n/a. "
        "Searched keys (batch size included) and LightGBM's settings are each model's chosen ones below, "
        "not the shared budget and default settings stated above.",
        "",
        "| model | trials | best trial | valid logloss | samples seen | training FLOPs | wall s | chosen |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in tuned:
        t = r["tuning"]
        flops = "n/a" if t["train_flops"] is None else f"{t['train_flops']:.3g}"
        chosen = ", ".join(f"{k}={_short(v)}" for k, v in t["params"].items())
        lines.append(
            f"| {r['name']} | {t['trials']} | {t['best_trial']} | {t['best_valid_logloss']:.4f} | "
            f"{t['samples_seen']:,} | {flops} | {t['wall_s']:.1f} | {chosen} |"
        )
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) and not math.isnan(value) else str(value)
