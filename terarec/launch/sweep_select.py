"""A sweep's optional selection axis (the learning rate): every point trains once per value, and the
value whose run scores best on the VALIDATION rows becomes the point's result.

In a sweep YAML::

    select: {key: optim.lr, values: [0.0003, 0.001, 0.003], metric: logloss}

``metric`` is ``logloss`` (lower is better, the default) or ``auc`` (higher is better), read from the
run's ``metrics.json`` as ``valid_logloss`` / ``valid_auc`` (the trainer's final validation pass on the
weights it reports). The eval split never takes part in the choice: a point's reported eval numbers
are those of its chosen run. With several seeds the choice is on the mean over seeds, so a point's
seeds share one value. Every run needs validation rows (``data.valid_fraction > 0`` or a dataset with
a ``valid`` split): checked for every run before anything trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from terarec.configs.loader import ConfigError, has_validation_rows, override_key
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import UserError

SELECT_KEYS = ("key", "values", "metric")
LOWER_IS_BETTER = {"logloss": True, "auc": False}


@dataclass(frozen=True)
class Selection:
    key: str  # a dotted config key, e.g. optim.lr
    values: list[Any]
    metric: str = "logloss"  # a key of LOWER_IS_BETTER, read as valid_<metric>

    @property
    def column(self) -> str:
        """The metrics.json / results.csv column the choice reads."""
        return f"valid_{self.metric}"

    @classmethod
    def parse(cls, raw: Any, path: str, set_elsewhere: list[str]) -> Selection | None:
        """``select:`` of a sweep file (None when absent); ``set_elsewhere``: grid keys and overrides,
        which must not set the selected key too (which one would win is not obvious)."""
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) - set(SELECT_KEYS) or not isinstance(raw.get("key"), str):
            raise ConfigError(
                f"{path}: 'select' must be a mapping of key (a config key), values (a list) and optionally "
                f"metric ({' or '.join(LOWER_IS_BETTER)}), got {raw!r}"
            )
        values, metric = raw.get("values"), raw.get("metric", "logloss")
        if not isinstance(values, list) or not values or len({str(v) for v in values}) != len(values):
            raise ConfigError(f"{path}: select values must be a non-empty list of distinct values, got {values!r}")
        if metric not in LOWER_IS_BETTER:
            raise ConfigError(f"{path}: select metric must be one of {', '.join(LOWER_IS_BETTER)}, got {metric!r}")
        key = raw["key"]
        if any(override_key(item) == key for item in set_elsewhere):
            raise ConfigError(f"{path}: select key '{key}' is also set by the grid or an override: keep one")
        return cls(key, list(values), metric)


def check_validation_rows(cfg: Config, schema: DatasetSchema, label: str, selection: Selection) -> None:
    """Selection without validation rows would fall back on nothing: stop before anything trains."""
    if not has_validation_rows(cfg, schema.split_rows):
        raise ConfigError(
            f"sweep point {label}: select on {selection.key} chooses on validation rows, and {cfg.data.path} "
            f"has no '{cfg.data.valid_split}' split: set data.valid_fraction (e.g. 0.1) in the sweep's overrides"
        )


def mark_selected(rows: list[dict[str, Any]], selection: Selection) -> list[dict[str, Any]]:
    """Set ``selected`` on every run; the chosen runs (each point's best value, all its seeds), in order.

    Per point, the value with the best mean ``valid_<metric>`` over its seeds wins (the first listed on a tie);
    a value whose mean is not finite (a diverged run's NaN) never wins, and a point with no finite one is an error.
    """
    scores: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        score = row.get(selection.column)
        if score is None:
            raise UserError(
                f"sweep point {row['point']} {selection.key}={row[selection.key]} recorded no {selection.column} "
                "(trained before final validation metrics were recorded): delete its run dir and re-run"
            )
        scores.setdefault(str(row["point"]), {}).setdefault(str(row[selection.key]), []).append(float(score))
    best = {point: _best_value(point, by_value, selection) for point, by_value in scores.items()}
    for row in rows:
        row["selected"] = best[str(row["point"])] == str(row[selection.key])
    return [row for row in rows if row["selected"]]


def _best_value(point: str, by_value: dict[str, list[float]], selection: Selection) -> str:
    """The value (as listed) with the best finite mean score over its seeds: NaN compares false both ways,
    so min/max over it would keep whichever came first."""
    means = {value: float(np.mean(s)) for value, s in by_value.items()}
    finite = {value: mean for value, mean in means.items() if math.isfinite(mean)}
    if not finite:
        raise UserError(
            f"sweep point {point}: every {selection.key} value scored a non-finite {selection.column} "
            f"({', '.join(f'{v}: {m}' for v, m in means.items())}): nothing to select (try smaller values)"
        )
    pick = min if LOWER_IS_BETTER[selection.metric] else max
    return pick(finite, key=finite.__getitem__)  # dicts keep the listed order: ties go to the first
