"""The predictions artifact: what it keeps, its bound, and thinning for plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainers import predictions


def stamps(n: int) -> pd.Series:
    return pd.Series(pd.date_range("2024-01-01", periods=n, freq="h"))


def test_a_forecast_keeps_the_best_baseline_and_round_trips(tmp_path):
    actual = np.arange(100.0)
    baselines = {"24h": actual + 5, "168h": np.r_[np.full(10, np.nan), actual[10:] + 1]}
    kept = predictions.build(stamps(100), actual, kind="forecast", predicted=actual + 2, baselines=baselines)
    assert kept.baseline == "168h"  # the lower MAE where it has values, as metrics.baseline chooses
    back = predictions.read(predictions.write(kept, tmp_path))
    pd.testing.assert_frame_equal(back.frame, kept.frame)
    assert back.kind == "forecast" and back.baseline == "168h" and back.threshold is None and back.total_rows == 100
    assert str(back.frame["timestamp"].dt.tz) == "UTC" and back.frame["baseline"].isna().sum() == 10


def test_anomaly_flags_are_score_at_or_above_the_threshold():
    scores = np.array([0.1, 0.5, 0.9, 0.5])
    kept = predictions.build(stamps(4), np.ones(4), kind="anomaly", scores=scores, threshold=0.5, labels=np.array([0, 1, 1, 0]))
    assert kept.frame["flagged"].tolist() == [False, True, True, True]
    assert kept.frame["label"].tolist() == [False, True, True, False] and "predicted" not in kept.frame


def test_the_artifact_is_bounded_to_the_newest_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(predictions, "MAX_ROWS", 50)
    kept = predictions.build(stamps(120), np.arange(120.0), kind="forecast", predicted=np.arange(120.0))
    assert len(kept.frame) == 50 and kept.truncated and kept.total_rows == 120
    assert kept.frame["actual"].iloc[0] == 70.0  # the newest 50
    assert predictions.read(predictions.write(kept, tmp_path)).total_rows == 120


def test_misaligned_arrays_are_refused():
    with pytest.raises(ValueError, match="rows"):
        predictions.build(stamps(5), np.ones(4), kind="forecast")


def test_thinning_keeps_peaks_troughs_and_every_flag():
    rng = np.random.default_rng(3)
    actual = rng.normal(size=10_000)
    actual[1234], actual[8765] = 50.0, -50.0
    scores = np.zeros(10_000)
    scores[[17, 5001, 9998]] = 1.0
    frame = predictions.build(stamps(10_000), actual, kind="anomaly", scores=scores, threshold=0.5).frame
    thin = predictions.downsample(frame, 400)
    assert len(thin) <= 400 + 3 and thin["timestamp"].is_monotonic_increasing
    assert {50.0, -50.0} <= set(thin["actual"]) and thin["flagged"].sum() == 3
    assert predictions.downsample(frame, 20_000) is frame  # small enough: untouched
