"""Early-stopping bookkeeping: best by the metric's direction, patience, a JSON round trip."""

from __future__ import annotations

import json
import math

from terarec.trainer.early_stop import EarlyStopper


def test_logloss_lower_is_better_and_patience_counts_evaluations() -> None:
    stopper = EarlyStopper("logloss", patience=2)
    assert stopper.update(10, {"logloss": 0.5, "auc": 0.7})
    assert not stopper.update(20, {"logloss": 0.5})  # equal is no improvement
    assert stopper.update(30, {"logloss": 0.4}) and stopper.bad_evals == 0
    assert not stopper.update(40, {"logloss": math.nan}) and not stopper.stopped
    assert not stopper.update(50, {"logloss": 0.45}) and stopper.stopped
    assert (stopper.best_step, stopper.best_value) == (30, 0.4)


def test_auc_higher_is_better_and_the_final_weights_do_not_spend_patience() -> None:
    stopper = EarlyStopper("auc", patience=1)
    stopper.update(10, {"auc": 0.7})
    assert not stopper.consider_final(15, {"auc": 0.6}) and stopper.bad_evals == 0 and not stopper.stopped
    assert stopper.consider_final(15, {"auc": 0.71}) and stopper.best_step == 15


def test_state_round_trips_through_json() -> None:
    stopper = EarlyStopper("logloss", patience=3)
    fresh = EarlyStopper("logloss", patience=3)
    fresh.load_state_dict(json.loads(json.dumps(stopper.state_dict())))  # NaN best before any evaluation
    assert fresh.best_step == -1 and math.isnan(fresh.best_value)
    stopper.update(5, {"logloss": 0.3, "count": 100})
    stopper.update(10, {"logloss": 0.31})
    fresh.load_state_dict(json.loads(json.dumps(stopper.state_dict())))
    assert fresh.state_dict() == stopper.state_dict()
