"""Early stopping on a validation metric: which evaluation was best, and when to stop.

Pure bookkeeping (no collectives): every rank feeds it the same all-reduced metrics, so every rank
takes the same decision at the same step. Its state travels in the checkpoint's ``trainer.json`` so
that ``resume=auto`` continues with the same best-so-far value and patience counter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

HIGHER_IS_BETTER = {"logloss": False, "auc": True}


@dataclass
class EarlyStopper:
    metric: str  # a key of HIGHER_IS_BETTER
    patience: int  # evaluations without improvement before stopping
    best_step: int = -1  # -1: no evaluation yet
    best_value: float = math.nan
    bad_evals: int = 0  # evaluations since the best one
    last_step: int = -1  # step of the latest evaluation (the final one is skipped if it is this step)
    stopped: bool = False
    best_metrics: dict[str, float] = field(default_factory=dict)  # the whole validation result at best_step

    def update(self, step: int, result: dict[str, float]) -> bool:
        """Record the validation ``result`` at ``step``; True when it is the best so far (strictly)."""
        value = float(result.get(self.metric, math.nan))
        self.last_step = step
        if not math.isnan(value) and (self.best_step < 0 or self._better(value, self.best_value)):
            self.best_step, self.best_value, self.bad_evals = step, value, 0
            self.best_metrics = {k: float(v) for k, v in result.items()}
            return True
        self.bad_evals += 1
        self.stopped = self.bad_evals >= self.patience
        return False

    def consider_final(self, step: int, result: dict[str, float]) -> bool:
        """The last weights of a run that ended off the evaluation cadence compete for best, without
        counting against patience (a resumed run must take the decisions of an uninterrupted one)."""
        value = float(result.get(self.metric, math.nan))
        if math.isnan(value) or (self.best_step >= 0 and not self._better(value, self.best_value)):
            return False
        self.best_step, self.best_value = step, value
        self.best_metrics = {k: float(v) for k, v in result.items()}
        return True

    def _better(self, value: float, than: float) -> bool:
        return value > than if HIGHER_IS_BETTER[self.metric] else value < than

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (NaN becomes None: JSON has no NaN)."""
        state = asdict(self)
        state["best_value"] = None if math.isnan(self.best_value) else self.best_value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best_step", "bad_evals", "last_step", "stopped", "best_metrics"):
            setattr(self, key, state[key])
        self.best_value = math.nan if state["best_value"] is None else float(state["best_value"])
