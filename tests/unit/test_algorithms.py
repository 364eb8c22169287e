"""Every algorithm, in-process on generated data: sane metrics, identical reruns for a seed,
artifacts that reload and reproduce the stored metrics, baselines, anomaly detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from server.demo_data import generate
from trainers import algorithms, evaluation, pipeline, predictions, preparation, spec
from trainers.errors import ConfigValidationError
from trainers.local import FolderRegistry, FrameSource, MemoryReporter

FAST = {
    "lgbm": {"n_estimators": 60},
    "xgboost": {"n_estimators": 60},
    "rf": {"n_estimators": 30},
    "mlp": {"epochs": 15, "hidden_sizes": [32]},
    "lstm": {"epochs": 8, "lookback": 12, "hidden_size": 16, "learning_rate": 0.01},
    "isolation_forest": {"n_estimators": 50},
    "ecod": {},
}
FEATURES = ["temperature", "humidity", "hour_of_day", "day_of_week", "load_lag_1", "load_lag_24"]


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate("2024-01-01 00:00", "2024-04-30 23:00")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """The demo load with labelled anomalies injected (3 % of the hours)."""
    df = generate("2024-01-01 00:00", "2024-04-30 23:00")
    rng = np.random.default_rng(3)
    df["is_anomaly"] = 0.0
    hit = rng.choice(np.arange(200, len(df)), size=len(df) // 30, replace=False)
    df.loc[hit, "load"] *= 0.25  # a feeder trip: load collapses for an hour
    df.loc[hit, "is_anomaly"] = 1.0
    return df


def config(algo: str, model_type: str = "forecast", **extra) -> dict:
    cfg = {
        "model_type": model_type,
        "algorithm": algo,
        "hyperparameters": FAST[algo],
        "features": FEATURES,
        "target": "load",
        "training_start": "2024-01-01T00:00:00",
        "training_end": "2024-04-30T23:00:00",
        "random_seed": 7,
    }
    if algorithms.get(algo).early_stopping:
        cfg["early_stopping_rounds"] = 5
    cfg.update(extra)
    return cfg


def train(frame, cfg):
    reporter, registry = MemoryReporter(), FolderRegistry()
    result = pipeline.run(spec.build(cfg), data=FrameSource(frame), reporter=reporter, registry=registry)
    return result, reporter, registry


CASES = [(a, "forecast") for a in algorithms.FORECASTERS] + [(a, "anomaly") for a in algorithms.ALL]


@pytest.mark.parametrize(("algo", "model_type"), CASES)
def test_trains_reproduces_and_reloads(frame, clean, algo, model_type):
    if model_type == "forecast":
        frame = clean
    extra = {"target": "is_anomaly", "features": ["load", *FEATURES]} if model_type == "anomaly" and algo != "isolation_forest" else {}
    if algo == "isolation_forest":
        extra = {"features": ["load", "load_lag_1", "hour_of_day"], "target": "is_anomaly"}
    cfg = config(algo, model_type, **extra)
    first, reporter, registry = train(frame, cfg)
    again, _, _ = train(frame, cfg)
    timing = {"training_duration_seconds"}
    same = {k: v for k, v in first.metrics.items() if k not in timing}
    assert {k: v for k, v in again.metrics.items() if k not in timing} == same  # same seed and data: identical metrics
    m = first.metrics
    if model_type == "forecast":
        assert 0 < m["mae"] <= m["rmse"] and m["r2_score"] > (0.0 if algo in ("mlp", "lstm") else 0.5), m
        assert {"baseline_mae", "baseline_rmse", "skill", "baseline_24h_mae", "baseline_168h_mae"} <= set(m)
    elif algo == "isolation_forest":
        assert 0 <= m["anomaly_rate"] <= 1 and "score_p99" in m and "f1" in m  # the 0/1 target scores the flags
    else:
        assert 0 <= m["f1"] <= 1 and 0 <= m["roc_auc"] <= 1 and "pr_auc" in m and "threshold" in m
    # The artifact is the library's own safe format and reproduces the validation scores.
    assert first.artifact.suffix in {".txt", ".json", ".skops", ".safetensors"}
    s = spec.build(cfg)
    prepared = preparation.prepare(FrameSource(frame).load("", s.table_columns(), s.training_start, s.training_end), s, MemoryReporter())
    model = algorithms.get(algo).load(first.artifact, prepared.task)
    rescored, again = evaluation.evaluate(model, prepared, s, MemoryReporter())
    for key in ("mae", "rmse", "f1", "roc_auc", "anomaly_rate"):
        if key in m:
            assert rescored[key] == pytest.approx(m[key], rel=1e-6), key
    # The validation predictions are kept beside the model, and the metrics follow from them.
    kept = predictions.read(first.artifact.parent / predictions.FILE_NAME)
    assert len(kept.frame) == m["validation_rows"] == kept.total_rows and not kept.truncated
    assert kept.frame["timestamp"].is_monotonic_increasing and str(kept.frame["timestamp"].dt.tz) == "UTC"
    pd.testing.assert_frame_equal(kept.frame, again.frame)
    if "mae" in m:
        assert kept.kind == "forecast" and kept.baseline in ("24h", "168h")
        err = (kept.frame["predicted"] - kept.frame["actual"]).abs().mean()
        assert err == pytest.approx(m["mae"], rel=1e-9)
        base = (kept.frame["baseline"] - kept.frame["actual"]).abs().mean()
        assert base == pytest.approx(m["baseline_mae"], rel=1e-9)
    else:
        assert kept.kind == "anomaly" and kept.threshold == pytest.approx(m["threshold"])
        if "anomaly_rate" in m:
            assert kept.frame["flagged"].mean() == pytest.approx(m["anomaly_rate"])
        assert (kept.frame["flagged"] == (kept.frame["score"] >= kept.threshold)).all()
    if algo in ("lgbm", "xgboost", "rf"):
        importance = registry.registered[0]["importance"]
        assert importance and sum(importance.values()) == pytest.approx(1.0)


def test_lgbm_beats_seasonal_naive_on_demo_data(frame):
    clean = generate("2024-01-01 00:00", "2024-12-31 23:00")
    result, _, _ = train(clean, config("lgbm", training_end="2024-12-31T23:00:00", hyperparameters={"n_estimators": 100}))
    assert result.metrics["skill"] > 0.5 and result.metrics["mae"] < result.metrics["baseline_mae"]


def test_a_model_that_loses_to_the_baseline_is_warned_about(frame):
    result, reporter, _ = train(frame, config("lgbm", features=["humidity"], hyperparameters={"n_estimators": 5}))
    assert result.metrics["skill"] < 0
    assert any(level == "WARNING" and "seasonal-naive" in msg for level, msg in reporter.lines)


@pytest.mark.parametrize("algo", ["lgbm", "xgboost", "rf"])
def test_supervised_anomaly_finds_labelled_anomalies(frame, algo):
    result, _, _ = train(
        frame,
        config(
            algo,
            "anomaly",
            target="is_anomaly",
            features=["load", "load_lag_1", "load_lag_24", "hour_of_day"],
            hyperparameters={**FAST[algo], "n_estimators": 100},
        ),
    )
    assert result.metrics["f1"] >= 0.6, result.metrics


@pytest.mark.parametrize("algo", ["lgbm", "isolation_forest"])
def test_unlabeled_anomaly_flags_injected_anomalies_above_chance(frame, algo):
    feats = ["temperature", "hour_of_day", "day_of_week", "load_lag_24"] if algo == "lgbm" else ["load_lag_1", "hour_of_day"]
    result, _, _ = train(frame, config(algo, "anomaly", features=feats, label_column="is_anomaly"))
    m = result.metrics
    assert m["precision"] > 3 * m["label_rate"], m  # flagged rows are anomalies far more often than chance


HYPERPARAMETER_TABLES = {
    "lgbm": [("learning_rate", 0), ("max_depth", 0), ("num_leaves", 1), ("feature_fraction", 1.5), ("bagging_freq", -1)],
    "xgboost": [("learning_rate", -0.1), ("max_depth", -2), ("subsample", 0), ("colsample_bytree", 2), ("gamma", -1)],
    "rf": [("n_estimators", 0), ("max_depth", 0), ("min_samples_split", 1), ("max_features", "cube"), ("bootstrap", "yes")],
    "mlp": [("hidden_sizes", [0]), ("dropout", 0.95), ("epochs", 0), ("learning_rate", 0), ("batch_size", 0)],
    "lstm": [("lookback", 1), ("num_layers", 0), ("hidden_size", 0), ("epochs", 0), ("dropout", -0.1)],
}


@pytest.mark.parametrize(("algo", "name", "value"), [(a, n, v) for a, rows in HYPERPARAMETER_TABLES.items() for n, v in rows])
def test_bad_hyperparameters_are_named(algo, name, value):
    with pytest.raises(ConfigValidationError) as err:
        spec.build(config(algo, hyperparameters={name: value}))
    assert [v.field for v in err.value.violations] == [f"hyperparameters.{name}"]


@pytest.mark.parametrize("algo", algorithms.FORECASTERS)
def test_unknown_hyperparameter_is_named(algo):
    with pytest.raises(ConfigValidationError) as err:
        spec.build(config(algo, hyperparameters={"num_trees": 10}))
    assert err.value.violations[0].field == "hyperparameters.num_trees"
    assert "not a hyperparameter of" in err.value.violations[0].description


def test_guide_hyperparameter_tables_are_accepted():
    spec.build(
        config(
            "lgbm",
            hyperparameters={
                "n_estimators": 100,
                "learning_rate": 0.1,
                "max_depth": 7,
                "num_leaves": 31,
                "min_data_in_leaf": 20,
                "feature_fraction": 0.8,
                "bagging_fraction": 0.8,
                "bagging_freq": 5,
                "lambda_l1": 0.0,
                "lambda_l2": 0.0,
            },
        )
    )
    spec.build(
        config(
            "xgboost",
            hyperparameters={
                "n_estimators": 100,
                "learning_rate": 0.1,
                "max_depth": 7,
                "min_child_weight": 1,
                "gamma": 0.0,
                "subsample": 0.8,
                "colsample_bytree": 0.8,
                "reg_alpha": 0.0,
                "reg_lambda": 1.0,
            },
        )
    )
    for mf in ("sqrt", "log2", 0.5, 3, None):
        spec.build(
            config(
                "rf",
                hyperparameters={
                    "n_estimators": 100,
                    "max_depth": None,
                    "min_samples_split": 2,
                    "min_samples_leaf": 1,
                    "max_features": mf,
                    "bootstrap": True,
                },
            )
        )


@pytest.mark.parametrize("algo", ["lgbm", "rf"])
def test_rolling_origin_backtest_reports_each_fold_and_the_mean(clean, algo):
    result, reporter, _ = train(clean, config(algo, backtest={"folds": 3, "horizon_hours": 168}))
    m = result.metrics
    folds = [m[f"backtest_fold{k}_mae"] for k in (1, 2, 3)]
    assert m["backtest_mae"] == pytest.approx(sum(folds) / 3)
    assert all(0 < f < 3 * m["baseline_mae"] for f in folds) and m["backtest_rmse"] >= m["backtest_mae"]
    assert any("backtest: 3 folds of 168 h" in msg for _, msg in reporter.lines)


def test_backtest_is_validated():
    with pytest.raises(ConfigValidationError) as err:
        spec.build(config("lgbm", backtest={"folds": 0, "horizon_hours": 24}))
    assert err.value.violations[0].field == "backtest.folds"
    with pytest.raises(ConfigValidationError) as err:
        spec.build(config("lgbm", backtest={"folds": 10, "horizon_hours": 24 * 30}))
    assert "half the training range" in err.value.violations[0].description


def test_use_gpu_without_a_gpu_or_for_trees_is_a_logged_warning(clean):
    import torch

    _, reporter, _ = train(clean, config("mlp", ray_config={"use_gpu": True}))
    warned = any(level == "WARNING" and "no GPU" in msg for level, msg in reporter.lines)
    assert warned != torch.cuda.is_available()
    _, reporter, _ = train(clean, config("lgbm", ray_config={"use_gpu": True}))
    assert any(level == "WARNING" and "lgbm trained on the CPU" in msg for level, msg in reporter.lines)
