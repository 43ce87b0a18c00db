"""``terarec compare``: several models (and optional non-deep baselines) on one prepared dataset,
with the same split, the same budget and the same seeds, in one table.

    terarec compare --data DIR --models dlrm,dcnv2,wukong --baseline lightgbm,logreg --seeds 0,1,2

A model is a name (``dlrm``, ``dcnv2``, ``wukong``, ``bst``: the recipe for the dataset's size class,
``configs/recipe_sizes.py``, or the class ``--recipe-size small|1m|1tb`` names) or any recipe name / YAML
(used as given); the chosen recipe and why are logged and recorded in compare.json. Every run gets
``data.path=DIR``, ``train.seed=S`` and the shared ``key=value`` overrides; the budget (``train.batch_size``,
``train.epochs``, ``train.max_steps``, ``train.max_minutes``) must come out equal for every model, or compare
stops and names the difference, so a comparison is never silently unequal. Each run trains in its own process under
``OUT/runs/NAME/seed_S``; baselines run ``terarec.baselines.tabular`` under ``OUT/baselines/KIND/seed_S``.
A finished run is reused on a re-run only when its resolved config (a baseline's settings) and its
dataset's fingerprint are the ones it would run with now (``terarec.launch.reuse``); every run is
checked before any trains, and changed ones stop the comparison (``--on-change stop``, the default)
or are moved aside and trained again (``--on-change rerun``). Results:
``OUT/compare.json`` (every run, mean and std over seeds), ``OUT/compare.md`` and ``OUT/compare.png``
(AUC, logloss and a reliability diagram per model; ECE/MCE/Brier in the table, ``launch/compare_report.py``).
``--calibrate METHOD`` (off by default) calibrates every model run on its validation rows and reports the
eval metrics before and after (``launch/compare_calibrate.py``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from terarec.configs.baselines import MAX_TRAIN_ROWS, describe_baselines
from terarec.configs.loader import ConfigError, check_batch_fits, config_to_dict, load_config
from terarec.configs.recipe_sizes import pick_recipe
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import RunFailedError, UserError
from terarec.launch.compare_calibrate import calibrate_run, check_method, check_valid_rows
from terarec.launch.compare_report import CALIBRATION_COLUMNS, calibration_table, plot_reliability
from terarec.launch.reuse import Identity, Planned, decide, make_room, move_aside, stop_on_changes
from terarec.launch.torchrun import child_user_error, run_child, trainer_command

log = logging.getLogger("terarec")
BASELINES = {"lightgbm": "lightgbm", "logreg": "sklearn"}  # baseline -> the module it needs
BUDGET_KEYS = (("train", "batch_size"), ("train", "epochs"), ("train", "max_steps"), ("train", "max_minutes"))
METRICS = (
    "auc",
    "logloss",
    "ne",
    "calibration",
    "params_dense",
    "params_sparse",
    "flops_per_example",
    "samples_per_s",
    "wall_s",
    *CALIBRATION_COLUMNS,
)


class CompareError(RunFailedError):
    """A run failed (not a user error): the message names it and its log file."""


@dataclass
class Entry:
    name: str  # as given on the command line
    kind: str  # "model" or "baseline"
    recipe: str = ""  # models: the recipe; baselines: the baseline kind
    recipe_choice: str = ""  # models: why this recipe (the dataset's size class, --recipe-size, or given)
    overrides: list[str] = field(default_factory=list)  # models: this entry's own (compare --tune's choice)
    params: dict[str, Any] | None = None  # baselines: tuned LightGBM parameters (None: the library defaults)
    valid_fraction: float | None = None  # baselines: select on validation rows (see tabular.read_train_valid)
    tuning_trial: bool = False  # a --tune trial: scored on valid only, never calibrated


@dataclass
class CompareSpec:
    data: str
    entries: list[Entry]
    seeds: list[int]
    nproc: int = 1
    overrides: list[str] = field(default_factory=list)
    max_train_rows: int = MAX_TRAIN_ROWS  # baselines train in memory on at most this many rows
    calibrate: str | None = None  # post-hoc calibration method for every model run (None: off)
    tune: int = 0  # > 0: optuna trials per model before the seeds (terarec.launch.tune)

    @classmethod
    def build(
        cls,
        data: str,
        models: str,
        baselines: str,
        seeds: str,
        nproc: int = 1,
        overrides: list[str] | None = None,
        max_train_rows: int = MAX_TRAIN_ROWS,
        calibrate: str | None = None,
        recipe_size: str | None = None,
        tune: int = 0,
    ) -> CompareSpec:
        """Parse and validate everything (recipes, budget, baselines' libraries) before any run."""
        if not (Path(data) / "schema.json").is_file():
            raise ConfigError(f"--data {data}: no schema.json there (prepare it with terarec prepare / terarec synth)")
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected a comma list of integers, e.g. 0,1,2") from None
        names = [m.strip() for m in models.split(",") if m.strip()]
        if tune < 0:
            raise ConfigError(f"--tune {tune}: expected a number of trials >= 0")
        if max_train_rows < 1:
            raise ConfigError(f"--baseline-max-train-rows {max_train_rows}: expected a number of rows >= 1")
        if not names or not seed_list or nproc < 1:
            raise ConfigError("compare needs at least one model (--models), one seed (--seeds) and --nproc >= 1")
        if len(set(seed_list)) != len(seed_list):
            raise ConfigError(f"--seeds {seeds!r}: a seed is named twice (each seed is one run per model)")
        check_method(calibrate)
        train_rows = DatasetSchema.load(data, check_parts=False).split_rows.get("train", 0)
        entries = [Entry(n, "model", *pick_recipe(n, train_rows, recipe_size)) for n in names]
        for kind in [b.strip() for b in baselines.split(",") if b.strip()]:
            if kind not in BASELINES:
                raise ConfigError(f"--baseline {kind}: unknown (choose from {', '.join(BASELINES)})")
            if importlib.util.find_spec(BASELINES[kind]) is None:
                raise ConfigError(
                    f"--baseline {kind} needs the '{BASELINES[kind]}' package: pip install 'terarec[baselines]'"
                )
            entries.append(Entry(kind, "baseline", kind))
        if len({e.name for e in entries}) != len(entries):
            raise ConfigError(f"compare: a model or baseline is named twice in {models!r} / {baselines!r}")
        spec = cls(data, entries, seed_list, nproc, list(overrides or []), max_train_rows, calibrate, tune)
        spec._check_budget()
        spec._check_splits()
        if tune:
            from terarec.launch.tune import check_tunable  # tune builds on this module

            check_tunable(spec)
        return spec

    def model_overrides(self, seed: int, run_dir: Path, entry: Entry | None = None) -> list[str]:
        # the entry's own after the shared ones; the shared data, seed and run dir come last: they win
        return [
            *self.overrides,
            *(entry.overrides if entry is not None else []),
            f"data.path={self.data}",
            f"train.seed={seed}",
            f"run.dir={run_dir}",
            "logging.progress=false",
            # calibrate loads the final checkpoint; --tune trials are never calibrated: --calibrate keeps them reusable
            f"checkpoint.final={'true' if self.calibrate and not (entry and entry.tuning_trial) else 'false'}",
        ]

    def budget(self, recipe: str, entry: Entry | None = None) -> dict[str, Any]:
        """The budget keys of ``recipe`` with this comparison's overrides and ``entry``'s own (a tuned
        model's), also validating the config."""
        cfg = load_config(recipe, self.model_overrides(self.seeds[0], Path("unused"), entry))
        return {f"{section}.{key}": getattr(getattr(cfg, section), key) for section, key in BUDGET_KEYS}

    def _check_splits(self) -> None:
        """Every run is scored on the eval split: without eval rows compare would train everything and
        then have nothing to compare, so it stops here; the shared batch must also fit the train split."""
        rows = DatasetSchema.load(self.data, check_parts=False).split_rows  # each run's trainer checks the parts
        for entry in self.entries:
            train, evaluation, cfg = "train", "eval", None  # the baselines' fixed splits
            if entry.kind == "model":
                cfg = load_config(entry.recipe, self.model_overrides(self.seeds[0], Path("unused")))
                train, evaluation = cfg.data.train_split, cfg.data.eval_split
            if rows.get(evaluation, 0) <= 0:
                raise ConfigError(
                    f"compare: --data {self.data} has no eval rows in split '{evaluation}' (rows: {rows}); "
                    "prepare it with an eval split (e.g. --eval-fraction 0.2)"
                )
            if cfg is not None:
                check_batch_fits(cfg.train.batch_size, train, rows.get(train, 0), self.nproc)
                if self.calibrate:
                    check_valid_rows(self.data, entry.name, cfg, rows)

    def _check_budget(self) -> None:
        budgets = {e.name: tuple(self.budget(e.recipe).items()) for e in self.entries if e.kind == "model"}
        values = set(budgets.values())
        if len(values) > 1:
            detail = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in b) for name, b in budgets.items())
            raise ConfigError(
                f"compare: the models' budgets differ ({detail}); set them for all, e.g. "
                "train.batch_size=N train.epochs=N"
            )


def _run_or_reuse(name: str, seed: int, planned: Planned, command: Callable[[bool], list[str]]) -> dict[str, Any]:
    """The run's metrics: read back when ``planned`` says the run on disk may be reused, else
    (re)computed by ``command(resume)`` in a child process logging to ``train.log``."""
    run_dir = planned.run_dir
    done = run_dir / "metrics.json"
    if planned.decision.action == "reuse":
        log.info("%s seed %d: done earlier with the same config and data, reused", name, seed)
    else:
        resume = make_room(planned)
        log.info("%s seed %d: training", name, seed)
        code = run_child(command(resume), run_dir / "train.log")
        mistake = child_user_error(run_dir / "train.log") if code != 0 else None
        if mistake is not None:
            raise UserError(f"{name} seed {seed}: {mistake} (log: {run_dir / 'train.log'})")
        if code != 0 or not done.is_file():
            raise CompareError(f"{name} seed {seed} failed (exit {code}); see {run_dir / 'train.log'}")
    return json.loads(done.read_text())


def _run_dir(output: Path, entry: Entry, seed: int) -> Path:
    return output / ("runs" if entry.kind == "model" else "baselines") / entry.name / f"seed_{seed}"


PRE_TUNING_NOTE = " (before tuning: each tuned model's searched keys are its chosen ones below)"
# what a baseline run's identity holds, as ``_baseline_settings`` writes it and its metrics.json records it
BASELINE_IDENTITY_KEYS = ("kind", "data", "max_train_rows", "seed", "valid_fraction", "params")


def _baseline_settings(spec: CompareSpec, entry: Entry, seed: int) -> dict[str, Any]:
    """A baseline's identity besides the data: what ``terarec.baselines.tabular`` records in its metrics
    (validation and parameters only when set, so untuned runs keep the identity they always had)."""
    return {
        "kind": entry.recipe,
        "data": str(Path(spec.data).resolve()),
        "max_train_rows": spec.max_train_rows,
        "seed": seed,
        **({} if entry.valid_fraction is None else {"valid_fraction": entry.valid_fraction}),
        **({} if entry.params is None else {"params": entry.params}),
    }


def _recorded_baseline_settings(run_dir: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: recorded[k] for k in BASELINE_IDENTITY_KEYS if k in recorded} if isinstance(recorded, dict) else None


def plan_runs(spec: CompareSpec, output: Path, fingerprint: str | None) -> list[Planned]:
    """Every (entry, seed) run, in table order, with whether its dir on disk may be reused."""
    planned = []
    for entry in spec.entries:
        for seed in spec.seeds:
            run_dir = _run_dir(output, entry, seed)
            if entry.kind == "model":
                config = config_to_dict(load_config(entry.recipe, spec.model_overrides(seed, run_dir, entry)))
                decision = decide(run_dir, Identity(config, fingerprint))
            else:
                now = Identity(_baseline_settings(spec, entry, seed), fingerprint)
                decision = decide(run_dir, now, _recorded_baseline_settings)
            planned.append(Planned(f"{entry.name} seed {seed}", run_dir, decision))
    return planned


def _run_model(spec: CompareSpec, entry: Entry, seed: int, planned: Planned) -> dict[str, Any]:
    overrides = spec.model_overrides(seed, planned.run_dir, entry)

    def command(resume: bool) -> list[str]:
        return trainer_command(["--config", entry.recipe, *overrides, *(["resume=auto"] if resume else [])], spec.nproc)

    return _run_or_reuse(entry.name, seed, planned, command)


def _run_baseline(spec: CompareSpec, entry: Entry, seed: int, planned: Planned) -> dict[str, Any]:
    args = _baseline_settings(spec, entry, seed)
    command = [
        sys.executable,
        "-m",
        "terarec.baselines.tabular",
        "--kind",
        entry.recipe,
        "--data",
        args["data"],
        "--output",
        str(planned.run_dir),
        "--seed",
        str(seed),
        "--max-train-rows",
        str(spec.max_train_rows),
        *([] if entry.valid_fraction is None else ["--valid-fraction", str(entry.valid_fraction)]),
        *([] if entry.params is None else ["--params", json.dumps(entry.params)]),
    ]
    return _run_or_reuse(entry.name, seed, planned, lambda resume: command)


def run_compare(spec: CompareSpec, output: Path, on_change: str = "stop") -> dict[str, Any]:
    """Every run (reused or trained, as :func:`plan_runs` and ``on_change`` decide before any
    trains), then ``compare.json``, ``compare.md`` and ``compare.png`` of this request's runs only."""
    fingerprint = dataset_fingerprint(spec.data)
    tuned: dict[str, Any] = {}
    untuned = spec
    if spec.tune:  # the chosen configs are what the seeds run: the final runs are planned after the trials
        from terarec.launch.tune import tune_all

        tuned = tune_all(spec, output, fingerprint, on_change)
        spec = replace(spec, entries=[tuned[e.name].entry if e.name in tuned else e for e in spec.entries])
    every_run = plan_runs(spec, output, fingerprint)
    stop_on_changes(every_run, on_change, "run")
    if any(p.decision.action == "changed" for p in every_run) and (output / "compare.json").is_file():
        log.info("compare.json listed runs now re-run: moved to %s", move_aside(output / "compare.json"))
    planned = iter(every_run)
    results = [_entry_result(spec, entry, planned, tuned.get(entry.name)) for entry in spec.entries]
    report = _report(untuned, fingerprint, results)
    (output / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "compare.md").write_text(render_markdown(report) + _render_tuning(report))
    plot(report, output / "compare.png")
    return report


def _entry_result(spec: CompareSpec, entry: Entry, planned: Iterator[Planned], tuned: Any) -> dict[str, Any]:
    """One entry's runs over the seeds (the next ``len(seeds)`` of ``planned``) and their summary; a tuned
    model's result records its resolved budget (its searched keys may differ from the shared one)."""
    if entry.kind == "model":
        log.info("%s: recipe %s (%s)", entry.name, entry.recipe, entry.recipe_choice)
    runs: list[dict[str, Any]] = []
    for seed in spec.seeds:
        run = _run_model if entry.kind == "model" else _run_baseline
        this = next(planned)
        runs.append(run(spec, entry, seed, this))
        if spec.calibrate and entry.kind == "model":
            what = f"{entry.name} seed {seed}"
            runs[-1] = {**runs[-1], **calibrate_run(this.run_dir, spec.calibrate, spec.nproc, what)}
        log.info("%s seed %d: auc %.4f logloss %.4f", entry.name, seed, runs[-1]["auc"], runs[-1]["logloss"])
    table = np.array([[float(r.get(k, np.nan)) for k in METRICS] for r in runs])
    return {
        "name": entry.name,
        "kind": entry.kind,
        "recipe": entry.recipe,
        **({"recipe_choice": entry.recipe_choice} if entry.kind == "model" else {}),
        "runs": runs,
        "mean": dict(zip(METRICS, table.mean(0).tolist())),
        "std": dict(zip(METRICS, table.std(0, ddof=1).tolist() if len(runs) > 1 else [0.0] * len(METRICS))),
        **({"tuning": _tuning_record(tuned, runs)} if tuned is not None else {}),
        **({"budget": spec.budget(entry.recipe, entry)} if tuned is not None and entry.kind == "model" else {}),
    }


def _report(spec: CompareSpec, fingerprint: str | None, results: list[dict[str, Any]]) -> dict[str, Any]:
    """compare.json: the results and what they share. ``spec`` is the untuned one: under ``--tune`` the
    shared ``budget`` is the one before tuning (``budget_pre_tuning``), each tuned result has its own."""
    first_model = next((r["runs"][0] for r in results if r["kind"] == "model"), results[0]["runs"][0])
    report = {
        "data": spec.data,
        "dataset_fingerprint": fingerprint,
        "seeds": spec.seeds,
        "tune": spec.tune,
        "nproc": spec.nproc,
        "overrides": spec.overrides,
        "train_samples": first_model.get("samples"),
        "eval_rows": first_model.get("eval_rows"),
        "auc_standard_error": auc_standard_error(
            max(r["mean"]["auc"] for r in results),
            first_model.get("eval_positives", 0),
            first_model.get("eval_rows", 0) - first_model.get("eval_positives", 0),
        ),
        "baseline_max_train_rows": spec.max_train_rows,
        "calibrate": spec.calibrate,
        "bayes_auc": recorded_bayes_auc(spec.data),
        "results": results,
    }
    model = next((e for e in spec.entries if e.kind == "model"), None)
    if model is not None:
        report["budget"] = spec.budget(model.recipe)
        if spec.tune:
            report["budget_pre_tuning"] = True
    eval_rows = sorted({run.get("eval_rows") for r in results for run in r["runs"]})
    if len(eval_rows) > 1:  # one split for everyone is the point of compare: say so loudly if it broke
        report["warning"] = (
            f"runs were scored on different numbers of eval rows {eval_rows}: the rows are not comparable"
        )
        log.warning("%s", report["warning"])
    return report


def _tuning_record(tuned: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from terarec.launch.tune import tuning_record

    return tuning_record(tuned, runs)


def _render_tuning(report: dict[str, Any]) -> str:
    from terarec.launch.tune import render_tuning

    return render_tuning(report)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC measured on this many positives and
    negatives, i.e. how far apart two models' AUCs on this eval set must be to mean anything."""
    if positives < 1 or negatives < 1:
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return float(np.sqrt(max(variance, 0.0)))


def recorded_bayes_auc(data: str | Path) -> float | None:
    """The eval split's Bayes AUC (true logits against the drawn labels) that ``terarec synth`` records
    in schema.json under its label mode (``extra.planted`` / ``extra.testbed``); None for real data."""
    for record in DatasetSchema.load(data, check_parts=False).extra.values():
        if isinstance(record, dict) and record.get("bayes_auc") is not None:
            return float(record["bayes_auc"])
    return None


def _bayes_line(report: dict[str, Any]) -> list[str]:
    """The share of the learnable gap each model captured, (AUC - 0.5) / (Bayes AUC - 0.5), when known."""
    bayes = report.get("bayes_auc")
    if bayes is None or bayes <= 0.5:
        return []
    shares = ", ".join(f"{r['name']} {(r['mean']['auc'] - 0.5) / (bayes - 0.5):.1%}" for r in report["results"])
    return [
        f"Bayes AUC of this eval split (the label model's true logits): {bayes:.4f}; share of the gap "
        f"(AUC - 0.5) / (Bayes AUC - 0.5) captured: {shares}."
    ]


def _cell(result: dict[str, Any], key: str, digits: int) -> str:
    mean, std = result["mean"][key], result["std"][key]
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(result["runs"]) > 1 else f"{mean:.{digits}f}"


_TUNED_BASELINES_NOTE = "; under --tune a tuned baseline's settings are its chosen ones under Tuning budgets"


def _tuned_baselines(report: dict[str, Any]) -> bool:
    return any(r["kind"] == "baseline" and "tuning" in r for r in report["results"])


def render_markdown(report: dict[str, Any]) -> str:
    seeds = ", ".join(map(str, report["seeds"]))
    lines = [
        f"# terarec compare: `{report['data']}`",
        "",
        f"Same train/eval split for every row: {report['train_samples']:,} training samples per run, "
        f"{report['eval_rows']:,} eval rows; seeds {seeds} (mean ± std over seeds); {report['nproc']} process(es).",
        f"Models' shared budget: {', '.join(f'`{k}={v}`' for k, v in report.get('budget', {}).items()) or 'n/a'}"
        f"{PRE_TUNING_NOTE if report.get('budget_pre_tuning') else ''}"
        f"{'; overrides: ' + ' '.join(f'`{o}`' for o in report['overrides']) if report['overrides'] else ''}.",
        f"Baselines train on at most {report['baseline_max_train_rows']:,} train rows with their libraries' "
        f"budgets ({describe_baselines()}{_TUNED_BASELINES_NOTE if _tuned_baselines(report) else ''}); "
        "their params are tree nodes / "
        "weights and their FLOPs/example comparisons (trees) or multiply-adds (logreg).",
        f"On this eval set an AUC has a standard error of about {report['auc_standard_error']:.4f} (Hanley & McNeil): "
        "AUCs closer than about twice that are not distinguishable on this data.",
        *_bayes_line(report),
        *([f"**Warning: {report['warning']}.**"] if "warning" in report else []),
        *[
            f"{r['name']}: the solver stopped at its iteration cap ({r['runs'][0].get('n_iter')}) before converging."
            for r in report["results"]
            if any(run.get("converged") is False for run in r["runs"])
        ],
        "",
        "| model | recipe | AUC | logloss | NE | calibration | dense params | sparse params | "
        "FLOPs/example | samples/s | wall s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    best = max(r["mean"]["auc"] for r in report["results"])
    for r in report["results"]:
        auc = _cell(r, "auc", 4)
        m = r["mean"]
        lines.append(
            f"| {r['name']} | {r['recipe']} | {'**' + auc + '**' if m['auc'] == best else auc} | "
            f"{_cell(r, 'logloss', 4)} | "
            f"{_cell(r, 'ne', 4)} | {_cell(r, 'calibration', 3)} | {m['params_dense']:,.0f} | "
            f"{m['params_sparse']:,.0f} | "
            f"{m['flops_per_example']:,.0f} | {m['samples_per_s']:,.0f} | {m['wall_s']:.1f} |"
        )
    return "\n".join([*lines, *calibration_table(report)]) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar charts of eval AUC and logloss (error bars: std over seeds) and a reliability diagram per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = [r["name"] for r in results]
    colors = ["tab:blue" if r["kind"] == "model" else "tab:gray" for r in results]
    figure, axes = plt.subplots(1, 3, figsize=(max(12, 1.6 * len(names) * 2 + 4), 4))
    plot_reliability(axes[2], results)
    for ax, key in zip(axes, ("auc", "logloss")):
        means = [r["mean"][key] for r in results]
        ax.bar(names, means, yerr=[r["std"][key] for r in results], color=colors, capsize=4)
        low, high = min(means), max(means)
        pad = max((high - low) * 0.5, 0.005)
        ax.set_ylim(low - pad, high + pad)  # differences are small: zoom on them (the axis does not start at 0)
        ax.set(title=f"eval {key} ({'higher' if key == 'auc' else 'lower'} is better)", ylabel=key)
        for x, m in enumerate(means):
            ax.annotate(f"{m:.4f}", (x, m), ha="center", va="bottom", fontsize=8)
    figure.suptitle(f"terarec compare: {report['data']} (gray: baselines)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
