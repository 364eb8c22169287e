"""Today's config behaviour, pinned: the canonical form and config_hash of a set of good
configs, and the exact violations (field, reason) of a set of bad ones, compared with
tests/unit/golden/configs.json. Whatever declares the config schema (issue 23: one pydantic
model instead of checks.py and the to_dict/from_dict pairs), these must not change.

(An unknown top-level field is refused at the request boundary, before these checks: the REST
face parses bodies strictly and gRPC cannot carry one; tests/e2e/test_rest.py shows it.)

A deliberate change of behaviour rewrites the file, and the diff is the review:
    .venv/bin/python -m tests.unit.test_config_golden --write
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from client._requests import config as config_message
from server.api.convert import config_to_dict
from tests.conftest import QUICK_START_CONFIG as QS
from trainers import spec

GOLDEN = Path(__file__).resolve().parent / "golden" / "configs.json"
DAY_AHEAD = {
    **QS,
    "forecast_horizon_hours": 24,
    "features": ["temperature", "hour_of_day", "day_of_week", "is_holiday", "load_lag_24", "load_lag_168", "load_roll24_mean",
                 "temperature_hdh_15", "load_diff_168"],
    "known_ahead": ["temperature"],
    "horizons": [1, 24, 48],
    "holidays": {"country": "DE", "subdivision": "BY"},
    "data_checks": {"max_gap_ratio": 0.1, "fail_on": ["gaps"]},
}  # fmt: skip
SPACE = {"learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.3}, "num_leaves": {"type": "randint", "lower": 8, "upper": 64}}

GOOD: dict[str, dict[str, Any]] = {
    "quick start": QS,
    "quick start reordered, defaults written": {**dict(reversed(list(QS.items()))), "feature_table": "load_forecasting"},
    "offsets in the window": {**QS, "training_start": "2024-01-01T02:00:00+02:00", "training_end": "2024-12-31T23:59:59Z"},
    "no defaults given": {k: v for k, v in QS.items() if k not in ("validation_split", "random_seed")},
    "xgboost with early stopping": {**QS, "algorithm": "xgboost", "hyperparameters": {"max_depth": 0}, "early_stopping_rounds": 5},
    "rf sampled": {**QS, "algorithm": "rf", "hyperparameters": {"max_depth": None}, "training_options": {"use_sample": 0.5}},
    "mlp": {**QS, "algorithm": "mlp", "hyperparameters": {"hidden_sizes": [8, 4], "epochs": 3}, "training_options": {"batch_size": 64}},
    "lstm on a gpu with a backtest": {**QS, "algorithm": "lstm", "hyperparameters": {"lookback": 12}, "ray_config": {"use_gpu": True},
                                      "backtest": {"folds": 2, "horizon_hours": 24}},
    "distributed lgbm": {**QS, "distributed": True, "ray_config": {"num_workers": 2, "cpus_per_worker": 1, "memory_per_worker": "512MB"}},
    "day ahead": DAY_AHEAD,
    "search": {**QS, "hyperparameters": {"n_estimators": 200}, "early_stopping_rounds": 20,
               "tuning": {"num_trials": 4, "max_concurrent_trials": 2, "search_space": SPACE}},
    "time limit and tracking": {**QS, "max_runtime_seconds": 600, "mlflow_tracking": {"experiment_name": "load", "tags": {"team": "ds"}}},
    "anomaly, labelled": {"model_type": "anomaly", "algorithm": "isolation_forest", "features": ["load_lag_1", "hour_of_day"],
                          "target": "load", "label_column": "is_anomaly", "training_start": "2024-01-01T00:00:00",
                          "training_end": "2024-03-01T00:00:00", "feature_table": "feeder_signals"},
    "anomaly, lgbm classifier": {**QS, "model_type": "anomaly", "target": "is_anomaly", "features": ["load", "temperature"],
                                 "feature_table": "anomaly_detection"},
}  # fmt: skip

BAD: dict[str, dict[str, Any]] = {
    "validation_split 1.5": {**QS, "validation_split": 1.5},
    "three at once": {**QS, "validation_split": 1.0, "random_seed": -1, "early_stopping_rounds": 0},
    "learning_rate -1": {**QS, "hyperparameters": {"learning_rate": -1}},
    "learning_rate infinite": {**QS, "hyperparameters": {"learning_rate": math.inf}},
    "learning_rate a string": {**QS, "hyperparameters": {"learning_rate": "fast"}},
    "unknown hyperparameter": {**QS, "hyperparameters": {"learning_rat": 0.1}},
    "unknown algorithm": {**QS, "algorithm": "gbdt"},
    "no features": {**QS, "features": []},
    "features not a list": {**QS, "features": "temperature"},
    "a feature twice": {**QS, "features": ["temperature", "temperature"]},
    "target among the features": {**QS, "features": ["load", "temperature"]},
    "window backwards": {**QS, "training_start": "2024-12-31T00:00:00", "training_end": "2024-01-01T00:00:00"},
    "a time that is not one": {**QS, "training_start": "soon"},
    "year 1": {**QS, "training_start": "0001-01-01T00:00:00+01:00"},
    "model_type mars": {**QS, "model_type": "mars"},
    "isolation_forest for forecasting": {**QS, "algorithm": "isolation_forest"},
    "random_seed a float": {**QS, "random_seed": 4.2},
    "random_seed a boolean": {**QS, "random_seed": True},
    "huge mlp": {**QS, "algorithm": "mlp", "hyperparameters": {"hidden_sizes": [4096] * 17}},
    "long lookback": {**QS, "algorithm": "lstm", "hyperparameters": {"lookback": 2000}},
    "many features": {**QS, "features": [f"f{i}" for i in range(500)]},
    "control characters": {**QS, "target": "lo\x07ad"},
    "day ahead with load_lag_1": {**DAY_AHEAD, "features": [*DAY_AHEAD["features"], "load_lag_1"]},
    "horizon 0": {**DAY_AHEAD, "forecast_horizon_hours": 0},
    "horizon 24.5": {**DAY_AHEAD, "forecast_horizon_hours": 24.5},
    "horizons a string": {**DAY_AHEAD, "horizons": "24"},
    "rolling window 1": {**DAY_AHEAD, "features": ["load_roll1_mean"]},
    "holiday without a country": {**QS, "features": ["is_holiday", "hour_of_day"]},
    "country XX": {**DAY_AHEAD, "holidays": {"country": "XX"}},
    "time zone on mars": {**DAY_AHEAD, "holidays": {"country": "DE", "timezone": "Mars/Olympus"}},
    "gap ratio 2": {**DAY_AHEAD, "data_checks": {"max_gap_ratio": 2}},
    "fail on gapz": {**DAY_AHEAD, "data_checks": {"fail_on": ["gapz"]}},
    "target range backwards": {**DAY_AHEAD, "data_checks": {"target_min": 5, "target_max": 1}},
    "unknown preprocessor": {**QS, "preprocessor": "nope"},
    "anomaly with a horizon": {**QS, "model_type": "anomaly", "forecast_horizon_hours": 24},
    "search metric f1": {**QS, "hyperparameters": {}, "tuning": {"metric": "f1", "search_space": SPACE}},
    "search bound 0 on a log scale": {**QS, "hyperparameters": {},
                                      "tuning": {"search_space": {"learning_rate": {"type": "loguniform", "lower": 0, "upper": 0.3}}}},
    "workers 0": {**QS, "distributed": True, "ray_config": {"num_workers": 0}},
    "memory nonsense": {**QS, "distributed": True, "ray_config": {"num_workers": 2, "memory_per_worker": "lots"}},
    "use_sample 0": {**QS, "training_options": {"use_sample": 0}},
    "backtest folds 0": {**QS, "backtest": {"folds": 0, "horizon_hours": 24}},
    "time limit -5": {**QS, "max_runtime_seconds": -5},
    "empty mlflow_tracking": {**QS, "mlflow_tracking": {}},
    "lgbm too big": {**QS, "hyperparameters": {"n_estimators": 100000, "num_leaves": 1000}},
    "nested too deep": {**QS, "hyperparameters": {"a": [[[[[[[1]]]]]]]}},
    "a long string": {**QS, "algorithm": "x" * 3000},
}  # fmt: skip


def current() -> dict[str, Any]:
    """What the code does now, for every config above."""
    good = {}
    for name, config in GOOD.items():
        built = spec.build(config)
        good[name] = {"canonical": built.to_dict(), "config_hash": built.config_hash}
    bad = {name: [[v.field, v.description] for v in spec.validate(config)] for name, config in BAD.items()}
    return {"good": good, "bad": bad}


def test_good_configs_keep_their_canonical_form_and_hash():
    golden = json.loads(GOLDEN.read_text())["good"]
    assert set(golden) == set(GOOD)
    for name, got in current()["good"].items():
        assert got == golden[name], name


@pytest.mark.parametrize("name", list(GOOD))
def test_the_canonical_form_survives_the_api_message(name):
    """canonical form -> TrainingConfig (as a client sends it) -> the dict the server reads:
    the same spec, the same hash (the proto <-> config mapping is part of the schema)."""
    golden = json.loads(GOLDEN.read_text())["good"][name]
    canonical = golden["canonical"]
    read = config_to_dict(config_message(canonical))
    built = spec.build(read, model_type=canonical["model_type"])
    assert built.to_dict() == canonical and built.config_hash == golden["config_hash"]


@pytest.mark.parametrize("name", list(BAD))
def test_bad_configs_keep_their_violations(name):
    golden = json.loads(GOLDEN.read_text())["bad"]
    got = [[v.field, v.description] for v in spec.validate(BAD[name])]
    assert got, f"{name}: no longer refused"
    assert got == golden[name], name


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(current(), indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
