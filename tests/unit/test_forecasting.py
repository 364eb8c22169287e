"""Forecast horizons, leakage, the derived features, data checks, live metrics and
preprocessors, on the pure trainer side (in-memory ports)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from server.demo_data import generate
from tests.conftest import QUICK_START_CONFIG
from trainers import features, pipeline, preparation, preprocessors, quality, spec
from trainers.errors import DataLoadError
from trainers.local import FolderRegistry, FrameSource, MemoryReporter
from trainers.spec import recipes

DAY_AHEAD = {
    **QUICK_START_CONFIG,
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-04-30T23:00:00",
    "forecast_horizon_hours": 24,
    "known_ahead": ["temperature"],
    "features": ["temperature", "hour_of_day", "day_of_week", "load_lag_24", "load_lag_168", "load_roll24_mean"],
}


def hourly(values: dict[str, list[float]], start: str = "2024-01-01") -> pd.DataFrame:
    n = len(next(iter(values.values())))
    return pd.DataFrame({"timestamp": pd.date_range(start, periods=n, freq="h", tz="UTC"), **values})


def fields(config: dict) -> dict[str, str]:
    return {v.field: v.description for v in spec.validate(config)}


# --- leakage ------------------------------------------------------------------------------


def test_the_quick_start_is_still_valid_one_hour_ahead():
    s = spec.build(QUICK_START_CONFIG)
    assert s.forecast_horizon_hours == 1 and s.known() == {"temperature", "humidity"}
    assert "forecast_horizon_hours" not in s.to_dict()  # the default leaves the canonical form (and hash) as it was


def test_day_ahead_refuses_lags_newer_than_the_origin_naming_them():
    bad = {**DAY_AHEAD, "features": ["load_lag_1", "load_lag_23", "humidity", "temperature_lag_1", "load_lag_24", "humidity_lag_12"]}
    found = fields(bad)
    assert "load_lag_1 is 1 h before the target hour, after the forecast origin 24 h before it" in found["features[0]"]
    assert "use a lag of at least 24 h" in found["features[0]"] and "features[1]" in found
    assert "humidity reads humidity, which is not in known_ahead, at the target hour" in found["features[2]"]
    assert "list humidity in known_ahead" in found["features[2]"]
    assert "humidity_lag_12" in found["features[5]"]
    assert {"features[3]", "features[4]"}.isdisjoint(found)  # temperature is known ahead; 24 h is at the origin


def test_without_known_ahead_nothing_is_known_beyond_one_hour():
    found = fields({**DAY_AHEAD, "known_ahead": None})
    assert "temperature reads temperature, which is not in known_ahead" in found["features[0]"]
    assert fields({**DAY_AHEAD, "known_ahead": ["load"]})["known_ahead"].startswith("'load' is the target")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"forecast_horizon_hours": 0}, "forecast_horizon_hours"),
        ({"forecast_horizon_hours": 24.5}, "forecast_horizon_hours"),
        ({"horizons": [1, 0]}, "horizons"),
        ({"horizons": "24"}, "horizons"),
        ({"features": ["load_roll1_mean"]}, "features[0]"),
        ({"features": ["load_diff_0"]}, "features[0]"),
        ({"features": ["temperature_hdh_99"]}, "features[0]"),
        ({"features": ["is_holiday", "hour_of_day"]}, "holidays"),
        ({"holidays": {"country": "XX"}}, "holidays.country"),
        ({"holidays": {"country": "DE", "subdivision": "ZZ"}}, "holidays.subdivision"),
        ({"holidays": {"country": "DE", "timezone": "Mars/Olympus"}}, "holidays.timezone"),
        ({"holidays": {"country": "DE", "region": "BY"}}, "holidays.region"),
        ({"data_checks": {"max_gap_ratio": 2}}, "data_checks.max_gap_ratio"),
        ({"data_checks": {"fail_on": ["gapz"]}}, "data_checks.fail_on[0]"),
        ({"data_checks": {"target_min": 5, "target_max": 1}}, "data_checks.target_max"),
        ({"preprocessor": "nope"}, "preprocessor"),
    ],
)
def test_each_new_field_is_checked_by_name(change, field):
    assert field in fields({**DAY_AHEAD, **change})


def test_a_horizon_with_no_usable_feature_is_refused():
    config = {**DAY_AHEAD, "features": ["load_lag_24"], "known_ahead": [], "horizons": [24, 48]}
    assert "no feature is usable 48 h ahead" in fields(config)["horizons"]


def test_anomaly_jobs_have_no_horizon():
    config = {**QUICK_START_CONFIG, "model_type": "anomaly", "forecast_horizon_hours": 24}
    assert fields(config)["forecast_horizon_hours"] == "applies to forecasting only"


def test_the_canonical_form_round_trips_the_new_fields():
    config = {
        **DAY_AHEAD,
        "horizons": [48, 1, 24],
        "holidays": {"country": "DE", "subdivision": "BY"},
        "data_checks": {"max_gap_ratio": 0.05, "target_min": 0},
        "features": [*DAY_AHEAD["features"], "is_holiday"],
    }
    s = spec.build(config)
    form = s.to_dict()
    assert form["horizons"] == [1, 24, 48] and form["holidays"] == {"country": "DE", "subdivision": "BY", "timezone": "UTC"}
    assert form["data_checks"] == {"max_gap_ratio": 0.05, "target_min": 0, "fail_on": ["gaps", "out_of_range"]}
    assert spec.TrainingSpec.from_dict(form) == s and spec.build(form).config_hash == s.config_hash


# --- derived features ---------------------------------------------------------------------


def test_rolling_statistics_end_at_the_origin_and_follow_timestamps():
    frame = hourly({"load": [float(i) for i in range(10)], "temperature": [10.0] * 10})
    frame = frame.drop(index=4).reset_index(drop=True)  # a gap at hour 4
    s = spec.build({**DAY_AHEAD, "forecast_horizon_hours": 2, "features": ["load_roll3_mean", "load_roll3_max", "temperature_roll3_sum"]})
    out = features.derive(frame, s)
    by_hour = dict(zip(frame["timestamp"].dt.hour, out["load_roll3_mean"], strict=True))
    # Hour 7, two hours ahead: the window ends at hour 5 (the origin) and holds hours 3, 5 (4 is missing).
    assert by_hour[7] == pytest.approx(4.0) and dict(zip(frame["timestamp"].dt.hour, out["load_roll3_max"], strict=True))[7] == 5.0
    assert np.isnan(by_hour[2])  # the window ends at hour 0: one value, fewer than half of three
    # temperature is known ahead: its window ends at the target hour itself.
    assert dict(zip(frame["timestamp"].dt.hour, out["temperature_roll3_sum"], strict=True))[9] == pytest.approx(30.0)


def test_differences_degree_hours_and_holidays():
    frame = hourly({"load": [float(i * i) for i in range(72)], "temperature": [5.0, 20.0, 30.0] * 24}, start="2024-12-24")
    s = spec.build(
        {
            **DAY_AHEAD,
            "forecast_horizon_hours": 1,
            "known_ahead": ["temperature"],
            "holidays": {"country": "DE", "timezone": "Europe/Berlin"},
            "features": ["load_diff_2", "temperature_hdh_18", "temperature_cdh_22", "is_holiday", "is_day_before_holiday"],
        }
    )
    out = features.derive(frame, s)
    assert out["load_diff_2"].iloc[10] == (9 * 9) - (7 * 7)  # ends at the origin, hour 9
    assert list(out["temperature_hdh_18"].iloc[:3]) == [13.0, 0.0, 0.0]
    assert list(out["temperature_cdh_22"].iloc[:3]) == [0.0, 0.0, 8.0]
    # 24 Dec is no German public holiday; 25 and 26 Dec are. Berlin is UTC+1: 23:00 UTC on the 24th is the 25th there.
    holiday = dict(zip(frame["timestamp"], out["is_holiday"], strict=True))
    assert holiday[pd.Timestamp("2024-12-24 12:00", tz="UTC")] == 0.0
    assert holiday[pd.Timestamp("2024-12-24 23:00", tz="UTC")] == 1.0
    assert holiday[pd.Timestamp("2024-12-26 12:00", tz="UTC")] == 1.0
    eve = dict(zip(frame["timestamp"], out["is_day_before_holiday"], strict=True))
    assert eve[pd.Timestamp("2024-12-24 12:00", tz="UTC")] == 1.0


def test_rolling_statistics_stay_within_each_series():
    one = hourly({"load": [1.0] * 6, "temperature": [0.0] * 6})
    two = hourly({"load": [100.0] * 6, "temperature": [0.0] * 6})
    frame = pd.concat([one.assign(series_id="a"), two.assign(series_id="b")], ignore_index=True)
    frame["series_id"] = frame["series_id"].astype("category")
    s = spec.build({**DAY_AHEAD, "forecast_horizon_hours": 1, "features": ["load_roll4_mean"]})
    out = features.derive(frame, s)
    assert set(out.loc[frame["series_id"] == "a", "load_roll4_mean"].dropna()) == {1.0}
    assert set(out.loc[frame["series_id"] == "b", "load_roll4_mean"].dropna()) == {100.0}


def test_history_covers_the_longest_look_back():
    s = spec.build({**DAY_AHEAD, "features": ["load_roll168_mean", "temperature_roll24_mean"]})
    assert s.history_hours() == 168 + 24  # the target's window ends at the origin, 24 h back
    assert recipes.seasonal_lags(1) == (24, 168) and recipes.seasonal_lags(36) == (48, 168) and recipes.seasonal_lags(200) == (216, 336)


# --- data checks --------------------------------------------------------------------------


def test_data_checks_count_and_warn():
    frame = hourly({"load": [1.0, 2.0, np.inf, 4.0, 5.0, 6.0], "flat": [3.0] * 6, "empty": [np.nan] * 6})
    frame = pd.concat([frame.drop(index=[1, 2]), frame.iloc[[4]]], ignore_index=True)  # two missing hours, one duplicate
    s = spec.build({**DAY_AHEAD, "data_checks": {"target_min": 0, "target_max": 10}})
    reporter = MemoryReporter()
    checked, counts = quality.check(frame, s, reporter)
    assert counts["data_gaps"] == 2 and counts["data_gap_ratio"] == pytest.approx(2 / 6) and counts["data_duplicates"] == 1
    assert counts["data_constant_columns"] == 1 and counts["data_missing_columns"] == 1 and counts["data_nonfinite"] == 0
    assert counts["data_out_of_range"] == 0 and counts["data_missing_values"] == 5 and counts["data_rows"] == 5
    warned = [m for level, m in reporter.lines if level == "WARNING"]
    assert any("gaps: 2 missing hours" in m for m in warned) and any("flat" in m for m in warned) and any("empty" in m for m in warned)
    assert checked is frame and reporter.writes == []  # recorded with the evaluation's metrics, not before


def test_a_failing_check_is_a_data_load_error_naming_it():
    frame = hourly({"load": [1.0, 2.0, np.inf, 4.0, 50.0, 6.0]})
    s = spec.build({**DAY_AHEAD, "data_checks": {"fail_on": ["nonfinite"]}})
    with pytest.raises(DataLoadError) as err:
        quality.check(frame, s, MemoryReporter())
    assert err.value.details["check"] == "nonfinite" and "1 infinite values" in err.value.message
    s = spec.build({**DAY_AHEAD, "data_checks": {"target_max": 10}})
    with pytest.raises(DataLoadError, match="out_of_range failed"):
        quality.check(frame, s, MemoryReporter())
    gappy = hourly({"load": [1.0] * 100}).drop(index=range(10, 15)).reset_index(drop=True)
    quality.check(gappy, spec.build({**DAY_AHEAD, "data_checks": {"max_gap_ratio": 0.1}}), MemoryReporter())  # 5 %: allowed
    with pytest.raises(DataLoadError, match="gaps failed"):
        quality.check(gappy, spec.build({**DAY_AHEAD, "data_checks": {"max_gap_ratio": 0.01}}), MemoryReporter())


def test_without_checks_infinite_values_are_dropped_as_missing_not_trained_on():
    frame = generate("2024-01-01", "2024-02-29")
    frame.loc[100:109, "temperature"] = np.inf
    s = spec.build({**QUICK_START_CONFIG, "training_start": "2024-01-01T00:00:00", "training_end": "2024-02-29T23:00:00"})
    reporter = MemoryReporter()
    checked, counts = quality.check(frame, s, reporter)
    prepared = preparation.prepare(checked, s, reporter)
    assert np.isfinite(prepared.data.x_train).all() and counts["data_nonfinite"] == 10


# --- the pipeline: horizons and live metrics -----------------------------------------------


def run(config: dict, frame: pd.DataFrame | None = None) -> tuple[pipeline.Result, MemoryReporter]:
    reporter = MemoryReporter()
    result = pipeline.run(
        spec.build(config), data=FrameSource(generate() if frame is None else frame), reporter=reporter, registry=FolderRegistry()
    )
    return result, reporter


def test_per_horizon_metrics_from_direct_models_with_baselines_at_each_horizon():
    result, reporter = run({**DAY_AHEAD, "horizons": [1, 24, 48]})
    m = result.metrics
    assert m["mae_h24"] == m["mae"] and m["skill_h24"] == m["skill"]  # the job's own horizon is the job's model
    assert m["mae_h1"] < m["mae_h24"]  # an hour ahead, newer data helps
    assert m["baseline_mae_h24"] == m["baseline_mae"] and m["baseline_mae_h48"] >= m["baseline_mae_h24"]
    assert "baseline_24h_mae" in m and "baseline_168h_mae" in m
    assert any("horizon 48 h: a direct model on 5 features (without load_lag_24" in line for _, line in reporter.lines)


def test_a_horizon_beyond_a_day_uses_baselines_that_far_back():
    result, _ = run({**DAY_AHEAD, "forecast_horizon_hours": 36, "features": ["temperature", "hour_of_day", "load_lag_48"]})
    assert "baseline_48h_mae" in result.metrics and "baseline_24h_mae" not in result.metrics


def test_live_metrics_are_written_at_most_once_a_second_and_replaced_at_evaluation(monkeypatch):
    clock = iter(np.arange(0.0, 1e6, 0.3))
    monkeypatch.setattr(pipeline._LiveMetrics, "clock", staticmethod(lambda: float(next(clock))))
    config = {**DAY_AHEAD, "hyperparameters": {"n_estimators": 60}, "early_stopping_rounds": 50}
    result, reporter = run(config)
    live = [w for w in reporter.writes if "live_round" in w]
    assert len(live) >= 2 and all(set(w) == {"mae", "rmse", "live_tune_mae", "live_tune_rmse", "live_round"} for w in live)
    assert all(w["mae"] == w["live_tune_mae"] for w in live)
    rounds = [w["live_round"] for w in live]
    assert rounds == sorted(rounds) and rounds[1] - rounds[0] >= 3  # 0.3 s per call: one write per 4 calls at most
    assert reporter.writes.index(live[-1]) < len(reporter.writes) - 1  # the evaluation's write comes after
    assert not any(k.startswith("live_") for k in reporter.values) and reporter.values["mae"] == result.metrics["mae"]
    assert reporter.values["data_gaps"] == 0  # the data checks' counts come with the final metrics


@pytest.mark.parametrize("algorithm", ["xgboost", "mlp"])
def test_other_round_based_algorithms_report_live_metrics(algorithm):
    hp = {"n_estimators": 20} if algorithm == "xgboost" else {"epochs": 3, "hidden_sizes": [8]}
    _, reporter = run({**DAY_AHEAD, "algorithm": algorithm, "hyperparameters": hp})
    first = next(w for w in reporter.writes if "live_round" in w)
    assert first["live_fit_mae"] > 0 and first["live_fit_rmse"] >= first["live_fit_mae"]


# --- preprocessors -----------------------------------------------------------------------


def test_an_installed_preprocessor_adds_features_and_is_leakage_checked():
    assert "load_times_temperature" in preprocessors.installed()  # tests/plugins, installed by make test
    config = {**DAY_AHEAD, "preprocessor": "load_times_temperature", "features": [*DAY_AHEAD["features"], "load_times_temperature"]}
    s = spec.build(config)
    assert s.table_columns() == ["load", "temperature"]
    result, reporter = run(config)
    assert "load_times_temperature" in result.importance
    too_far = fields({**config, "forecast_horizon_hours": 48, "features": ["temperature", "load_lag_48", "load_times_temperature"]})
    assert "outputs are safe up to 24 h ahead" in too_far["features[2]"]


def test_a_failing_preprocessor_fails_the_job_naming_it():
    with pytest.raises(preprocessors.PreprocessorError, match="'always_fails' failed: RuntimeError"):
        run({**DAY_AHEAD, "preprocessor": "always_fails", "features": ["temperature", "never_made"]})


def test_a_forecast_larger_than_one_answer_is_refused_naming_series():
    from trainers import forecasting
    from trainers.errors import ConfigValidationError

    forecasting.check_size(1000, 24)  # the benchmark's size: fine
    with pytest.raises(ConfigValidationError) as err:
        forecasting.check_size(25_000, 24)
    assert err.value.violations[0].field == "series" and "500000" in err.value.violations[0].description
