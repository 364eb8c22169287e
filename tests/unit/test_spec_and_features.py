"""Pure trainer logic: validation, feature derivation, the chronological split, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import QUICK_START_CONFIG
from trainers import features, metrics, preparation, spec
from trainers.errors import ConfigValidationError, DataLoadError
from trainers.local import MemoryReporter


def test_guide_config_is_valid_and_defaults_are_filled():
    s = spec.build(QUICK_START_CONFIG)
    assert s.feature_table == "load_forecasting" and s.validation_split == 0.2 and s.random_seed == 42
    assert s.lags == {"load_lag_1": ("load", 1), "load_lag_24": ("load", 24)}
    assert s.table_columns() == ["load", "temperature", "humidity"]
    assert str(s.training_start) == "2024-01-01 00:00:00+00:00"
    bare = {k: v for k, v in QUICK_START_CONFIG.items() if k not in ("validation_split", "random_seed", "model_type")}
    assert spec.build(bare, model_type="forecast").validation_split == 0.2


def test_build_reports_every_violation():
    with pytest.raises(ConfigValidationError) as err:
        spec.build({**QUICK_START_CONFIG, "validation_split": 1.0, "random_seed": -1, "early_stopping_rounds": 0})
    assert [v.field for v in err.value.violations] == ["validation_split", "random_seed", "early_stopping_rounds"]
    assert err.value.details == {"field": "validation_split", "error": "Must be between 0.0 and 1.0"}


def test_postgresql_system_column_names_are_refused_naming_the_field():
    # Reading xmin would read PostgreSQL's own column, not the user's (issue 26, item 5).
    found = spec.validate({**QUICK_START_CONFIG, "features": ["temperature", "xmin", "ctid_lag_24"]})
    assert [(v.field, "system column" in v.description) for v in found] == [("features", True), ("features", True)], found
    found = spec.validate({**QUICK_START_CONFIG, "target": "tableoid", "features": ["temperature"]})
    assert [v.field for v in found] == ["target"], found


@pytest.mark.parametrize("value", [True, "0.1", float("nan"), float("inf")])
def test_hyperparameter_types_are_checked(value):
    violations = spec.validate({**QUICK_START_CONFIG, "hyperparameters": {"learning_rate": value}})
    assert [v.field for v in violations] == ["hyperparameters.learning_rate"]


def test_lags_follow_timestamps_across_gaps():
    ts = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 03:00", "2024-01-01 04:00"], utc=True)
    frame = pd.DataFrame({"timestamp": ts, "load": [1.0, 2.0, 3.0, 4.0]})
    lag1 = features.lag(frame, "load", 1)
    assert lag1.isna().tolist() == [True, False, True, False]  # 03:00 has no 02:00 row: missing, not shifted
    assert lag1[1] == 1.0 and lag1[3] == 3.0
    cal = features.calendar(frame["timestamp"], "hour_of_day")
    assert cal.tolist() == [0, 1, 3, 4]
    assert features.calendar(pd.Series(pd.to_datetime(["2024-01-06"], utc=True)), "is_weekend").tolist() == [1.0]


@pytest.mark.parametrize("tz", ["UTC", None])
def test_the_sorted_time_lag_is_the_lookup_by_timestamp(tz):
    # lag's binary search over strictly increasing times (the pipeline's sorted frames) gives
    # exactly what the general reindex by timestamp gives: gaps, a NaN value, every lag.
    rng = np.random.default_rng(0)
    ts = pd.date_range("2024-01-01", periods=3000, freq="h", tz=tz)
    keep = rng.random(len(ts)) > 0.1
    frame = pd.DataFrame({"timestamp": ts[keep], "load": rng.random(int(keep.sum()))})
    frame.loc[5, "load"] = np.nan
    shuffled = frame.sample(frac=1.0, random_state=1)  # unsorted: the general lookup
    for hours in (1, 24, 168):
        fast = features.lag(frame, "load", hours)
        general = features.lag(shuffled, "load", hours).sort_index()
        assert features._lag_in_sorted_time(frame, "load", hours) is not None
        assert features._lag_in_sorted_time(shuffled, "load", hours) is None
        assert np.array_equal(fast.to_numpy(), general.to_numpy(), equal_nan=True), hours
        assert fast.notna().sum() > len(frame) // 2


def test_the_sorted_series_lag_and_rolling_are_the_per_series_lookups():
    # Several series as derive sorts them (categorical ids, times increasing in each, gaps): the
    # one binary search over (series, second) keys and pandas' grouped rolling give exactly
    # what one series at a time gives, and no lag or window crosses into another series.
    rng = np.random.default_rng(2)
    parts = []
    for i, start in enumerate(["2024-01-01", "2024-01-03", "2024-01-01 05:00"]):
        ts = pd.date_range(start, periods=400, freq="h", tz="UTC")
        keep = rng.random(len(ts)) > 0.15
        parts.append(pd.DataFrame({"series_id": f"s{i}", "timestamp": ts[keep], "load": rng.random(int(keep.sum())) + 10 * i}))
    frame = pd.concat(parts, ignore_index=True)
    frame["series_id"] = frame["series_id"].astype("category")
    for hours in (1, 24, 168):
        assert features._lag_in_sorted_series(frame, "load", hours) is not None
        together = features.lag(frame, "load", hours).to_numpy()
        alone = np.concatenate([features.lag(p.drop(columns="series_id"), "load", hours).to_numpy() for p in parts])
        assert np.array_equal(together, alone, equal_nan=True), hours
    for stat in ("mean", "min", "max", "std", "sum"):
        together = features.rolling(frame, "load", 24, 24, stat).to_numpy()
        alone = np.concatenate([features.rolling(p.drop(columns="series_id"), "load", 24, 24, stat).to_numpy() for p in parts])
        assert np.allclose(together, alone, rtol=1e-12, equal_nan=True), stat
        assert np.isfinite(together).sum() > len(frame) // 2
    assert features._lag_in_sorted_series(frame.sample(frac=1.0, random_state=0), "load", 24) is None  # unsorted: the general lookup


def test_split_is_chronological_and_drops_incomplete_rows():
    n = 24 * 30
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "load": np.arange(n, dtype=float),
            "temperature": np.ones(n),
        }
    )
    frame = frame.sample(frac=1.0, random_state=0)  # arrives unordered
    s = spec.build({**QUICK_START_CONFIG, "features": ["temperature", "load_lag_24"]})
    reporter = MemoryReporter()
    prepared = preparation.prepare(frame, s, reporter)
    d = prepared.data
    assert len(d.y_train) + len(d.y_valid) == n - 24
    assert d.y_train.max() < d.y_valid.min()  # every validation row is later than every training row
    assert list(d.y_train) == sorted(d.y_train) and list(d.y_valid) == sorted(d.y_valid)
    assert len(d.y_valid) == pytest.approx(0.2 * (n - 24), abs=2)
    assert any("dropped 24" in line for _, line in reporter.lines)


def test_sampling_is_seeded_and_only_thins_training_rows():
    n = 24 * 30
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "load": np.arange(n, dtype=float),
            "temperature": np.ones(n),
        }
    )
    cfg = {**QUICK_START_CONFIG, "features": ["temperature"], "training_options": {"use_sample": 0.5}}
    a = preparation.prepare(frame, spec.build(cfg), MemoryReporter()).data
    b = preparation.prepare(frame, spec.build(cfg), MemoryReporter()).data
    full = preparation.prepare(frame, spec.build({**cfg, "training_options": {}}), MemoryReporter()).data
    assert np.array_equal(a.y_train, b.y_train) and len(a.y_train) == round(len(full.y_train) * 0.5)
    assert np.array_equal(a.y_valid, full.y_valid)


def test_too_few_rows_is_a_data_load_error():
    frame = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC"), "load": np.ones(10), "temperature": np.ones(10)}
    )
    with pytest.raises(DataLoadError, match="only 10 complete rows"):
        preparation.prepare(frame, spec.build({**QUICK_START_CONFIG, "features": ["temperature"]}), MemoryReporter())


def test_metrics():
    m = metrics.regression(np.array([1.0, 2.0, 0.0, 4.0]), np.array([1.0, 3.0, 1.0, 2.0]))
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(np.sqrt(1.5))
    assert m["mape"] == pytest.approx((0 + 50 + 50) / 3)  # the zero target is left out
    assert m["r2_score"] == pytest.approx(1 - 6 / 8.75)


def test_series_keep_their_own_lags_and_splits():
    ts = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    a = pd.DataFrame({"timestamp": ts, "series_id": "feeder-a", "load": np.arange(48, dtype=float), "temperature": 1.0})
    b = pd.DataFrame({"timestamp": ts[24:], "series_id": "feeder-b", "load": 1000 + np.arange(24, dtype=float), "temperature": 2.0})
    frame = pd.concat([b, a]).sample(frac=1.0, random_state=1)  # mixed order
    lagged = features.lag(frame.sort_values(["series_id", "timestamp"]).reset_index(drop=True), "load", 1)
    ordered = frame.sort_values(["series_id", "timestamp"]).reset_index(drop=True)
    first_b = ordered.index[ordered.series_id == "feeder-b"][0]
    assert np.isnan(lagged[first_b])  # not feeder-a's value at the same hour
    assert lagged[first_b + 1] == 1000.0
    s = spec.build({**QUICK_START_CONFIG, "features": ["temperature", "load_lag_1"], "validation_split": 0.25})
    prepared = preparation.prepare(frame, s, MemoryReporter())
    d = prepared.data
    # each series validates on its own last quarter: both appear in the validation part
    assert {1.0, 2.0} == set(d.x_valid[:, 0])
    assert len(d.y_valid) == pytest.approx(0.25 * 47 + 0.25 * 23, abs=3)
    assert (
        d.y_valid[d.x_valid[:, 0] == 2.0].min() > 1000 and d.y_train[d.x_train[:, 0] == 2.0].max() < d.y_valid[d.x_valid[:, 0] == 2.0].min()
    )


def test_one_series_in_time_order_is_checked_and_prepared_as_when_shuffled():
    # The checks and the preparation skip hashing for one series whose times only go up (as
    # the database hands it over); shuffled, the same rows take the general path. Both give
    # the same counts and the same prepared rows: gaps, sub-hour rows, a repeated hour.
    from trainers import quality

    rng = np.random.default_rng(3)
    ts = pd.date_range("2024-01-01", periods=24 * 40 * 2, freq="30min", tz="UTC")
    keep = rng.random(len(ts)) > 0.2
    frame = pd.DataFrame({"timestamp": ts[keep], "series_id": "", "load": rng.random(int(keep.sum())) * 100, "temperature": 1.0})
    frame["temperature"] = rng.random(len(frame))
    s = spec.build({**QUICK_START_CONFIG, "features": ["temperature", "load_lag_1", "load_lag_24"]})
    shuffled = frame.sample(frac=1.0, random_state=0)
    assert features.strictly_increasing(frame["timestamp"]) and not features.strictly_increasing(shuffled["timestamp"])
    in_order, _ = quality.combine([quality.summarize(frame, s)], s)
    general, _ = quality.combine([quality.summarize(shuffled, s)], s)
    assert in_order == general and in_order["data_gaps"] > 0
    a, b = preparation.derive(frame, s), preparation.derive(shuffled, s)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.baselines.keys() == b.baselines.keys()
    for name in a.baselines:
        assert np.array_equal(a.baselines[name], b.baselines[name], equal_nan=True)
    # Two series, or a missing id among them, are not one series.
    assert not features.one_series(frame.assign(series_id=["a", "b"] * (len(frame) // 2) + ["a"] * (len(frame) % 2)))
    mixed = frame.assign(series_id=pd.Series(["a"] * len(frame), dtype=object))
    mixed.loc[3, "series_id"] = None
    assert features.one_series(mixed) and not features.one_series(mixed, allow_missing=False)
