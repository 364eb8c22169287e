"""Issue 25 item 3: threshold policies chosen on the training range (percentile,
contamination, labelled with a stated fallback, fixed), the value alone as a detector's input,
event-level metrics, and a warning when the share flagged is far from the rate expected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import QUICK_START_CONFIG
from trainers import metrics, pipeline
from trainers import spec as specs
from trainers.errors import ConfigValidationError
from trainers.evaluation import choose_threshold
from trainers.local import FolderRegistry, FrameSource, MemoryReporter

ANOMALY = {**QUICK_START_CONFIG, "model_type": "anomaly", "algorithm": "isolation_forest", "hyperparameters": {"n_estimators": 50},
           "training_start": "2024-01-01T00:00:00", "training_end": "2024-03-31T23:00:00"}  # fmt: skip


def signal_with_incidents() -> pd.DataFrame:
    """Three months of a daily-cycle signal with six incidents (a few hours far off), labelled."""
    rng = np.random.default_rng(4)
    ts = pd.date_range("2024-01-01", "2024-03-31 23:00", freq="h", tz="UTC")
    value = 50 + 10 * np.sin(np.arange(len(ts)) * 2 * np.pi / 24) + rng.normal(0, 1, len(ts))
    label = np.zeros(len(ts))
    for start in (200, 600, 1000, 1500, 1800, 2000):
        value[start : start + 4] += 40
        label[start : start + 4] = 1
    return pd.DataFrame({"timestamp": ts, "load": value, "incident": label})


def test_each_policy_chooses_its_threshold():
    scores = np.arange(1000, dtype=float)
    labels = np.zeros(1000)
    s = lambda **t: specs.build({**ANOMALY, "threshold": t}) if t else specs.build(ANOMALY)  # noqa: E731
    assert choose_threshold(s(), scores, None, None, default="percentile")[0] == pytest.approx(np.percentile(scores, 99))
    assert choose_threshold(s(method="percentile", value=95), scores, None, None, default="percentile")[0] == pytest.approx(949.05)
    threshold, how, rate = choose_threshold(s(method="contamination", value=0.05), scores, None, None, default="percentile")
    assert threshold == pytest.approx(np.quantile(scores, 0.95)) and rate == 0.05 and "contamination" in how
    assert choose_threshold(s(method="fixed", value=123.0), scores, None, None, default="percentile")[:2] == (123.0, "fixed at 123")
    labels[950:] = 1  # the top of the last tenth is labelled
    found, how, _ = choose_threshold(s(method="labelled"), scores, labels, None, default="percentile")
    assert found == 950.0 and "best F1" in how
    some = np.zeros(1000)
    some[10:15] = 1  # anomalies, but none in the tune window: the training label rate, said
    found, how, rate = choose_threshold(s(method="labelled"), scores, some, None, default="percentile")
    assert rate == 0.005 and "fewer than" in how and found == pytest.approx(np.quantile(scores, 0.995))
    _, how, _ = choose_threshold(s(method="labelled"), scores, np.zeros(1000), None, default="percentile")
    assert "no labelled anomaly" in how and "99th percentile" in how


def test_bad_thresholds_and_the_value_alone_are_checked():
    def refused(config):
        with pytest.raises(ConfigValidationError) as err:
            specs.build(config)
        return {v.field: v.description for v in err.value.violations}

    assert "expected anomaly rate" in refused({**ANOMALY, "threshold": {"method": "contamination"}})["threshold.value"]
    assert "percentile" in refused({**ANOMALY, "threshold": {"method": "percentile", "value": 120}})["threshold.value"]
    assert "one of" in refused({**ANOMALY, "threshold": {"method": "median"}})["threshold.method"]
    assert "anomaly detection only" in refused({**QUICK_START_CONFIG, "threshold": {"method": "fixed", "value": 1}})["threshold"]
    assert specs.build({**ANOMALY, "features": []}).features == ()  # the value alone
    assert "isolation_forest" in refused({**ANOMALY, "algorithm": "lgbm", "features": []})["features"]
    assert refused({**QUICK_START_CONFIG, "features": []})["features"] == "at least one feature is required"


def test_events_count_windows_caught_delays_and_false_alarms():
    stamps = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    labels = np.zeros(48)
    labels[[5, 6, 7, 30, 31]] = 1
    flagged = np.zeros(48, dtype=bool)
    flagged[[6, 20, 40]] = True  # the first window 1 h late, the second missed, two false alarms
    got = metrics.events(labels, flagged, stamps)
    assert got == {"windows_total": 2.0, "windows_caught": 1.0, "false_alarms_per_day": pytest.approx(2 / (47 / 24)),
                   "detection_delay_hours_median": 1.0}  # fmt: skip


def test_the_value_alone_with_contamination_catches_every_incident(tmp_path):
    frame = signal_with_incidents()
    config = {**ANOMALY, "features": [], "label_column": "incident", "threshold": {"method": "contamination", "value": 0.01}}
    reporter = MemoryReporter()
    result = pipeline.run(specs.build(config), data=FrameSource(frame), reporter=reporter, registry=FolderRegistry(tmp_path))
    m = result.metrics
    assert m["windows_total"] >= 1 and m["windows_caught"] == m["windows_total"], m
    assert m["recall"] == 1.0 and 0.5 <= m["flag_rate_ratio"] <= 2.0, m
    assert not [line for _, line in reporter.lines if "may not transfer" in line]
    # A threshold that does not transfer (every row above it) is a WARNING and a metric.
    config["threshold"] = {"method": "fixed", "value": -1e9}
    reporter = MemoryReporter()
    result = pipeline.run(specs.build(config), data=FrameSource(frame), reporter=reporter, registry=FolderRegistry(tmp_path / "b"))
    assert result.metrics["flag_rate_ratio"] > 2.0
    assert [line for level, line in reporter.lines if level == "WARNING" and "may not transfer" in line]


def test_ecod_scores_a_row_the_same_alone_or_in_a_batch_and_finds_the_incidents(tmp_path):
    # ECOD's distributions are the training rows', fixed at fit (PyOD's re-estimate them with
    # each batch scored, so a row's score would depend on its neighbours in the request).
    from trainers import algorithms
    from trainers.algorithms import FitOptions, TrainData

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    ecod = algorithms.get("ecod")
    model = ecod.fit(
        TrainData(x, np.zeros(2000), x[:0], np.zeros(0), ("a", "b")),
        {},
        FitOptions("reconstruction", 1, None, 1, None, False, lambda d, t: None),
    )
    batch = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, -4.0], [4.0, 4.0]])
    together = model.predict(batch)
    alone = np.array([model.predict(row[None, :])[0] for row in batch])
    assert np.array_equal(together, alone)
    assert together[0] < together[1] and together[0] < together[2] and together[3] == together.max()
    model.save(tmp_path)
    assert np.array_equal(ecod.load(tmp_path / "model.safetensors", "reconstruction").predict(batch), together)
    # Through the pipeline, on the value alone with the contamination rate: every incident caught.
    frame = signal_with_incidents()
    config = {**ANOMALY, "algorithm": "ecod", "hyperparameters": {}, "features": [], "label_column": "incident",
              "threshold": {"method": "contamination", "value": 0.01}}  # fmt: skip
    m = pipeline.run(
        specs.build(config), data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry(tmp_path / "j")
    ).metrics
    assert m["windows_total"] >= 1 and m["windows_caught"] == m["windows_total"], m


def test_per_series_metrics_summarise_each_series_error():
    series = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4)
    y = np.array([10.0] * 12)
    pred = y + np.array([1.0] * 4 + [2.0] * 4 + [4.0] * 4)  # MAE 1, 2, 4
    naive = {"24h": y + np.array([2.0] * 4 + [1.0] * 4 + [8.0] * 4)}  # baseline MAE 2, 1, 8
    out = metrics.per_series(y, pred, series, naive)
    assert out["series_count"] == 3
    assert (out["series_mae_median"], out["series_mae_max"]) == (2.0, 4.0)
    assert out["series_mae_p90"] == pytest.approx(3.6)
    assert out["series_mape_median"] == pytest.approx(20.0)
    assert out["series_skill_median"] == pytest.approx(0.5)  # skills 0.5, -1, 0.5
    assert out["series_beating_baseline"] == pytest.approx(2 / 3)
    assert metrics.per_series(y, pred, np.array(["a"] * 12), naive) == {}
