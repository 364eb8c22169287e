"""Zero train/serve skew: a model forecasts, from an origin inside its validation window,
exactly what it predicted for those hours when it was validated, because a forecast derives
its features through the same code (preparation.derive) from the history up to the origin
and the known-ahead inputs after it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from server.demo_data import generate
from trainers import algorithms, forecasting, pipeline, predictions, spec
from trainers.errors import ConfigValidationError, DataLoadError
from trainers.local import FolderRegistry, FrameSource, MemoryReporter

DAY_AHEAD = {
    "model_type": "forecast",
    "target": "load",
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-03-31T23:00:00",
    "forecast_horizon_hours": 24,
    "known_ahead": ["temperature"],
    "holidays": {"country": "DE", "subdivision": "BY", "timezone": "Europe/Berlin"},
    "preprocessor": "load_times_temperature",
    "features": ["temperature", "hour_of_day", "day_of_week", "is_holiday", "load_lag_24", "load_lag_168", "load_roll24_mean",
                 "load_diff_168", "temperature_hdh_15", "load_times_temperature"],
}  # fmt: skip
ALGORITHMS = [
    ("lgbm", {"n_estimators": 40, "num_leaves": 15}, 1e-9),
    ("xgboost", {"n_estimators": 40, "max_depth": 4}, 1e-9),
    ("rf", {"n_estimators": 20, "max_depth": 8}, 1e-9),
    ("mlp", {"hidden_sizes": [16], "epochs": 3}, 1e-6),  # float32 inference
    ("lstm", {"hidden_size": 8, "epochs": 1, "lookback": 12}, 1e-6),
]


def _train(config: dict, frame: pd.DataFrame):
    s = spec.build(config)
    result = pipeline.run(s, data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry())
    model = algorithms.get(s.algorithm).load(result.artifact, algorithms.REGRESSION)
    kept = predictions.read(result.artifact.parent / predictions.FILE_NAME).frame
    return s, model, kept


@pytest.mark.parametrize(("algorithm", "hyperparameters", "tolerance"), ALGORITHMS, ids=[a for a, _, _ in ALGORITHMS])
def test_a_forecast_from_inside_the_validation_window_is_what_validation_predicted(algorithm, hyperparameters, tolerance):
    frame = generate("2024-01-01", "2024-03-31")
    s, model, kept = _train({**DAY_AHEAD, "algorithm": algorithm, "hyperparameters": hyperparameters}, frame)
    stamps = pd.to_datetime(kept["timestamp"], utc=True)
    for origin in (stamps.iloc[30], stamps.iloc[len(stamps) // 2]):
        # The table as it stands: actual loads after the origin are there too, but a forecast
        # reads only the known-ahead temperature after it.
        got = forecasting.forecast(model, s, frame, origin)
        assert len(got) == 24 and got["timestamp"].iloc[0] == origin + pd.Timedelta(hours=1)
        stored = kept.assign(timestamp=stamps).set_index("timestamp")["predicted"].reindex(got["timestamp"])
        np.testing.assert_allclose(got["forecast"].to_numpy(), stored.to_numpy(), rtol=tolerance, atol=tolerance)


def test_a_forecast_never_reads_the_target_after_its_origin():
    frame = generate("2024-01-01", "2024-03-31")
    s, model, kept = _train({**DAY_AHEAD, "algorithm": "lgbm", "hyperparameters": {"n_estimators": 20}}, frame)
    origin = pd.Timestamp("2024-03-20T05:00:00", tz="UTC")
    scrambled = frame.copy()
    after = scrambled["timestamp"] > origin
    scrambled.loc[after, "load"] = -1e6  # what a forecast may not see
    pd.testing.assert_frame_equal(forecasting.forecast(model, s, frame, origin), forecasting.forecast(model, s, scrambled, origin))


def test_the_limits_are_named():
    frame = generate("2024-01-01", "2024-03-31")
    s, model, _ = _train({**DAY_AHEAD, "algorithm": "lgbm", "hyperparameters": {"n_estimators": 10}}, frame)
    origin = pd.Timestamp("2024-03-20T05:00:00", tz="UTC")
    with pytest.raises(ConfigValidationError) as err:
        forecasting.forecast(model, s, frame, origin, horizon_hours=25)
    assert err.value.violations[0].field == "horizon_hours" and "up to 24 h ahead" in err.value.violations[0].description
    no_weather = frame[frame["timestamp"] <= origin + pd.Timedelta(hours=10)]
    with pytest.raises(DataLoadError, match="known-ahead column temperature has no value for 2024-03-20T16:00:00"):
        forecasting.forecast(model, s, no_weather, origin)
    inputs = frame.loc[frame["timestamp"] > origin, ["timestamp", "temperature"]]
    assert forecasting.forecast(model, s, no_weather, origin, inputs=inputs).equals(forecasting.forecast(model, s, frame, origin))


def test_each_series_forecasts_from_its_own_history():
    one = generate("2024-01-01", "2024-03-31")
    frame = pd.concat([one.assign(series_id="feeder-a"), one.assign(series_id="feeder-b", load=one["load"] * 1.5 + 20)])
    s, model, kept = _train({**DAY_AHEAD, "algorithm": "lgbm", "hyperparameters": {"n_estimators": 30}}, frame)
    origin = pd.Timestamp("2024-03-25T11:00:00", tz="UTC")
    got = forecasting.forecast(model, s, frame, origin, horizon_hours=6)
    assert sorted(got["series_id"].unique()) == ["feeder-a", "feeder-b"] and len(got) == 12
    stored = kept.assign(timestamp=pd.to_datetime(kept["timestamp"], utc=True)).set_index(["series_id", "timestamp"])["predicted"]
    want = stored.reindex(pd.MultiIndex.from_frame(got[["series_id", "timestamp"]])).to_numpy()
    np.testing.assert_allclose(got["forecast"].to_numpy(), want, rtol=1e-9)
