"""The tuning section read strictly, its canonical form, and what a trial may see."""

from __future__ import annotations

import numpy as np
import pytest

from client._requests import config as config_message
from server.api.convert import config_to_dict
from tests.conftest import QUICK_START_CONFIG, tiny_config
from trainers import algorithms, spec
from trainers import spec as specs
from trainers.algorithms import FitOptions, TrainData
from trainers.errors import ConfigValidationError
from trainers.spec.tuning import Tuning
from trainers.tuning import TRIAL_EARLY_STOPPING, TrialSetup, fold_sizes, folds, run_trial, trial_options, whole_range

SPACE = {"learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.3}, "max_depth": {"type": "randint", "lower": 3, "upper": 9}}


def test_a_search_round_trips_through_the_canonical_form_and_the_api():
    config = tiny_config(tuning={"num_trials": 8, "search_space": SPACE})
    built = spec.build(config, model_type="forecast")
    assert built.tuning is not None and built.tuning.mode == "min" and built.tuning.max_concurrent_trials == 2
    assert spec.TrainingSpec.from_dict(built.to_dict()) == built
    # Through protobuf (Struct numbers are doubles): randint bounds come back whole.
    read = config_to_dict(config_message({**config, "model_type": "forecast"}))
    assert read["tuning"]["search_space"]["max_depth"] == {"type": "randint", "lower": 3, "upper": 9}
    assert spec.build(read, model_type="forecast").tuning == built.tuning


@pytest.mark.parametrize(
    ("tuning", "field"),
    [
        ({"search_space": []}, "tuning.search_space"),
        ({"num_trials": 0, "search_space": SPACE}, "tuning.num_trials"),
        ({"metric": "f1", "search_space": SPACE}, "tuning.metric"),
        ({"metric": "r2_score", "mode": "min", "search_space": SPACE}, "tuning.mode"),
        ({"search_space": {"bogus": {"type": "choice", "values": [1]}}}, "tuning.search_space.bogus"),
        ({"search_space": {"num_leaves": {"type": "choice", "values": [4]}}}, "tuning.search_space.num_leaves"),  # fixed too
        ({"search_space": {"max_depth": {"type": "uniform", "lower": 3, "upper": 9}}}, "tuning.search_space.max_depth"),
        ({"search_space": {"learning_rate": {"type": "loguniform", "lower": 0, "upper": 0.3}}}, "tuning.search_space.learning_rate.lower"),
        ({"search_space": {"learning_rate": {"type": "uniform", "lower": 0.1, "upper": 7}}}, "tuning.search_space.learning_rate.upper"),
        ({"search_space": {"learning_rate": {"type": "normal"}}}, "tuning.search_space.learning_rate"),
        ({"search_space": {"max_depth": {"type": "choice", "values": [3, 1000]}}}, "tuning.search_space.max_depth.values[1]"),
    ],
)
def test_a_malformed_search_names_the_field(tuning, field):
    violations = spec.validate(tiny_config(tuning=tuning), model_type="forecast")
    assert any(v.field == field for v in violations), violations


def test_a_search_is_for_forecasting():
    config = tiny_config(tuning={"search_space": SPACE}, model_type="anomaly", algorithm="lgbm")
    assert any(v.field == "tuning" for v in spec.validate(config, model_type="anomaly"))


def test_a_trial_never_sees_the_validation_part():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 3)), rng.normal(size=300)
    data = TrainData(x[:200], y[:200], x[270:], y[270:], ("a", "b", "c"), x[200:270], y[200:270])
    options = FitOptions("regression", 42, None, 1, None, False, lambda done, total: None)
    space = {"num_leaves": {"type": "choice", "values": [4, 8]}}
    tuning = Tuning.model_validate({"num_trials": 2, "folds": 1, "search_space": space})
    setup = TrialSetup.of("lgbm", {"n_estimators": 20}, data, options, tuning)
    assert setup.data.x_valid.shape == (0, 3) and len(setup.data.y_valid) == 0
    assert np.array_equal(setup.data.x_tune, x[200:270])
    reports: list[tuple[int, float]] = []
    scored = run_trial(setup, {"num_leaves": 4}, lambda done, value: reports.append((done, value)))
    # Every 10 rounds the trial reports its tune score in the metric's own units: the score
    # is the MAE on the tune part of the model at its best round (it stops early).
    trial = trial_options(setup)
    assert trial.early_stopping_rounds == TRIAL_EARLY_STOPPING and trial.eval_metric == "mae"
    model = algorithms.get("lgbm").fit(setup.data, {"n_estimators": 20, "num_leaves": 4}, trial)
    tune_mae = float(np.mean(np.abs(model.predict(x[200:270]) - y[200:270])))
    assert [done for done, _ in reports] == [10, 20]
    assert scored.score == pytest.approx(tune_mae, rel=1e-9) and scored.rounds == model.best_iteration


def test_a_trial_is_the_mean_of_rolling_origin_folds_that_end_where_validation_starts():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(600, 3)), rng.normal(size=600)
    data = TrainData(x[:450], y[:450], x[550:], y[550:], ("a", "b", "c"), x[450:550], y[450:550])
    parts = list(folds(data, 3))
    # Nearest validation first; each slice as long as the tune part, ending where the next starts.
    assert [len(p.y_tune) for p in parts] == [100, 100, 100]
    assert np.array_equal(parts[1].x_tune, x[350:450]) and np.array_equal(parts[1].x_train, x[:350])
    assert np.array_equal(parts[2].x_tune, x[250:350]) and np.array_equal(parts[2].x_train, x[:250])
    # A fourth would fit on 150 rows, fewer than twice its slice.
    assert len(list(folds(data, 5))) == 3 and fold_sizes(data, 5) == [100, 100, 100]
    options = FitOptions("regression", 42, None, 1, None, False, lambda done, total: None)
    tuning = Tuning.model_validate({"num_trials": 2, "folds": 3, "search_space": {"num_leaves": {"type": "choice", "values": [4]}}})
    setup = TrialSetup.of("lgbm", {"n_estimators": 30}, data, options, tuning)
    scored = run_trial(setup, {"num_leaves": 4})
    lgbm, trial = algorithms.get("lgbm"), trial_options(setup)
    by_hand, best = [], []
    for part in parts:
        model = lgbm.fit(part, {"n_estimators": 30, "num_leaves": 4}, trial)
        by_hand.append(float(np.mean(np.abs(model.predict(part.x_tune) - part.y_tune))))
        best.append(model.best_iteration)
    assert scored.fold_scores == pytest.approx(by_hand, rel=1e-9) and scored.score == pytest.approx(np.mean(by_hand), rel=1e-9)
    assert scored.rounds == max(1, round(float(np.mean(best))))


def test_folds_and_the_whole_range_keep_each_series_in_time_order():
    # Two series (rows ordered by series, then time); each fold's slice is the series' own last rows.
    x = np.arange(40, dtype=float).reshape(20, 2)
    y = np.arange(20, dtype=float)
    groups = np.array([0] * 8 + [1] * 8)
    data = TrainData(
        x[np.r_[0:8, 10:18]], y[np.r_[0:8, 10:18]], x[:0], y[:0], ("a", "b"),
        x[np.r_[8:10, 18:20]], y[np.r_[8:10, 18:20]], groups, np.array([0, 0, 1, 1]),
    )  # fmt: skip
    earlier = list(folds(data, 2))[1]
    assert earlier.y_tune.tolist() == [6, 7, 16, 17] and earlier.y_train.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    whole = whole_range(data)
    assert whole.y_train.tolist() == list(range(10)) + list(range(10, 20)) and len(whole.y_tune) == 0
    assert whole.train_groups is not None and whole.train_groups.tolist() == [0] * 10 + [1] * 10


def test_a_search_without_a_space_searches_the_algorithms_own_written_in():
    # "tuning": {"num_trials": N} alone: the algorithm's built-in space, those fixed in
    # hyperparameters left out, written into the canonical form (the stored config says it).
    spec = specs.build(
        {**QUICK_START_CONFIG, "hyperparameters": {"num_leaves": 31}, "tuning": {"num_trials": 30, "time_budget_seconds": 600}}
    )
    space = spec.tuning.search_space
    assert "learning_rate" in space and "n_estimators" in space and "num_leaves" not in space
    stored = spec.to_dict()["tuning"]
    assert stored["num_trials"] == 30 and stored["time_budget_seconds"] == 600 and set(stored["search_space"]) == set(space)
    again = specs.TrainingSpec.from_dict(spec.to_dict(), model_type="forecast")
    assert again == spec and again.config_hash == spec.config_hash
    for algorithm in ("lgbm", "xgboost", "rf", "mlp", "lstm"):  # every built-in range within the algorithm's limits
        assert specs.build(
            {**QUICK_START_CONFIG, "algorithm": algorithm, "hyperparameters": {}, "tuning": {"num_trials": 2}}
        ).tuning.search_space
    with pytest.raises(ConfigValidationError) as err:
        specs.build({**QUICK_START_CONFIG, "tuning": {"num_trials": 2, "time_budget_seconds": 1}})
    assert err.value.violations[0].field == "tuning.time_budget_seconds"
