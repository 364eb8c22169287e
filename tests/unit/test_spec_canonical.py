"""One form of a job's config: the validated spec, its canonical form and its hash."""

from __future__ import annotations

import json

import pytest

from tests.conftest import QUICK_START_CONFIG
from trainers import spec
from trainers.errors import ConfigValidationError
from trainers.spec import ModelType, TrainingSpec

CONFIGS = [
    QUICK_START_CONFIG,
    {**QUICK_START_CONFIG, "algorithm": "xgboost", "hyperparameters": {"max_depth": 0}, "early_stopping_rounds": 5},
    {**QUICK_START_CONFIG, "algorithm": "mlp", "hyperparameters": {"hidden_sizes": [8, 4]}, "training_options": {"batch_size": 64}},
    {**QUICK_START_CONFIG, "algorithm": "rf", "hyperparameters": {"max_depth": None}, "training_options": {"use_sample": 0.5}},
    {**QUICK_START_CONFIG, "backtest": {"folds": 2, "horizon_hours": 24}, "ray_config": {"use_gpu": True}, "algorithm": "lstm",
     "hyperparameters": {"lookback": 12}},
    {
        "model_type": "anomaly", "algorithm": "isolation_forest", "features": ["load_lag_1", "hour_of_day"], "target": "load",
        "label_column": "is_anomaly", "training_start": "2024-01-01T02:00:00+02:00", "training_end": "2024-03-01T00:00:00Z",
        "feature_table": "feeder_signals",
    },
]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["algorithm"])
def test_the_canonical_form_reads_back_exactly(config):
    s = spec.build(config)
    canonical = s.to_dict()
    assert TrainingSpec.from_dict(canonical) == s
    assert spec.build(canonical) == s  # the canonical form is itself a valid config
    assert spec.build(canonical).to_dict() == canonical  # and a fixed point
    assert json.loads(json.dumps(canonical)) == canonical  # plain JSON, as stored


def test_defaults_are_written_in_and_times_are_utc():
    canonical = spec.build(CONFIGS[-1]).to_dict()
    assert canonical["training_start"] == "2024-01-01T00:00:00"  # +02:00 -> UTC, written as the guide does
    assert canonical["training_end"] == "2024-03-01T00:00:00"
    assert canonical["validation_split"] == 0.2 and canonical["random_seed"] == 42
    bare = {k: v for k, v in QUICK_START_CONFIG.items() if k not in ("validation_split", "random_seed")}
    assert spec.build(bare).to_dict()["feature_table"] == "load_forecasting"


def test_the_hash_is_of_the_model_not_of_how_it_was_written():
    s = spec.build(QUICK_START_CONFIG)
    reordered = dict(reversed(list(QUICK_START_CONFIG.items())))
    with_defaults = {**QUICK_START_CONFIG, "feature_table": "load_forecasting", "training_start": "2024-01-01T00:00:00Z"}
    assert spec.build(reordered).config_hash == s.config_hash == spec.build(with_defaults).config_hash
    assert len(s.config_hash) == 64
    changed = spec.build({**QUICK_START_CONFIG, "random_seed": 7})
    assert changed.config_hash != s.config_hash


def test_model_type_has_one_domain_type():
    s = spec.build(QUICK_START_CONFIG)
    assert s.model_type is ModelType.FORECAST and s.to_dict()["model_type"] == "forecast"
    assert spec.build({**QUICK_START_CONFIG, "model_type": None}, model_type="forecast").model_type is ModelType.FORECAST


def test_a_window_is_checked_with_the_callers_field_names():
    with pytest.raises(ConfigValidationError) as err:
        spec.parse_window("2024-02-01", "2024-01-01", names=("evaluation_start", "evaluation_end"), message="Invalid evaluation window")
    assert [v.field for v in err.value.violations] == ["evaluation_end"]
    start, end = spec.parse_window("2024-01-01", "2024-02-01", names=("a", "b"), message="m")
    moved = spec.build(QUICK_START_CONFIG).with_window(start, end)
    assert (moved.training_start.month, moved.training_end.month) == (1, 2)


def test_a_date_beyond_utc_is_a_violation_not_a_crash():
    violations = spec.validate({**QUICK_START_CONFIG, "training_end": "9999-12-31T23:59:59-01:00"})
    assert [v.field for v in violations] == ["training_end"] and "out of range" in violations[0].description
