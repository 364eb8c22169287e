"""Forecast quality 1 h and 24 h ahead, for each algorithm, with and without the derived
features (holidays, degree hours, rolling statistics, differences), on generated data with a
known signal: the demo feeder (server/demo_data.py: daily and weekly cycles, heating below
15 °C, cooling above 22 °C, public holidays that look like Sundays, AR(1) noise).

Each row is one job's pipeline (trainers.pipeline.run with in-memory ports: the same code a
job runs, without the service around it) on 2023-01 .. 2025-06, validated on its last 20 %
(2025-01 .. 2025-06, five holidays). MAE and MAPE are on that validation part; skill is
1 - MAE / the seasonal-naive MAE at the same horizon.

    python -m bench.quality [--only lgbm,xgboost] [--horizons 1,24]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from server import demo_data
from trainers import algorithms, pipeline, preparation, spec
from trainers.evaluation import predict_after
from trainers.local import FolderRegistry, FrameSource, MemoryReporter

WINDOW = {"training_start": "2023-01-01T00:00:00", "training_end": "2025-06-30T23:00:00", "validation_split": 0.2}
HP = {
    "lgbm": {"n_estimators": 400, "learning_rate": 0.05, "num_leaves": 31},
    "xgboost": {"n_estimators": 400, "learning_rate": 0.05, "max_depth": 6},
    "rf": {"n_estimators": 100, "max_depth": 16, "min_samples_leaf": 3},
    "mlp": {"epochs": 40, "hidden_sizes": [64, 32], "batch_size": 256},
    "lstm": {"epochs": 8, "lookback": 24, "hidden_size": 32, "batch_size": 256},
}
# The demo's holidays are England's (New Year, Easter, May bank holidays, Christmas); its data
# has no August bank holiday, which the calendar has: the holiday features see one day too many.
HOLIDAYS = {"country": "GB", "subdivision": "ENG", "timezone": "Europe/London"}


def features(horizon: int, new: bool) -> list[str]:
    """The plain set a forecaster starts with (calendar, temperature, the latest usable lags)
    and, with ``new``, the derived features."""
    lags = ["load_lag_1", "load_lag_24", "load_lag_168"] if horizon == 1 else ["load_lag_24", "load_lag_168"]
    plain = ["temperature", "hour_of_day", "day_of_week", *lags]
    derived = [
        "is_holiday",
        "is_day_after_holiday",
        "temperature_hdh_15",
        "temperature_cdh_22",
        "load_roll24_mean",
        "load_roll168_mean",
        "load_diff_24",
    ]
    return plain + derived if new else plain


def holiday_mae(result: pipeline.Result, frame, job: spec.TrainingSpec) -> float:
    """MAE on the validation hours whose date is one of the demo's holidays (the days its
    load really is a Sunday's), from the registered model reloaded."""
    window = frame[(frame["timestamp"] >= job.training_start) & (frame["timestamp"] <= job.training_end)]
    prepared = preparation.prepare(window[["timestamp", *job.table_columns()]], job, MemoryReporter())
    d = prepared.data
    model = algorithms.get(job.algorithm).load(result.artifact, prepared.task)
    history = np.concatenate([d.x_train, d.x_tune]) if len(d.x_tune) else d.x_train
    pred = predict_after(model, history, d.x_valid)
    valid, _ = preparation.validation_rows(prepared.frame, job)
    days = prepared.frame["timestamp"][valid].dt.strftime("%Y-%m-%d").to_numpy()
    on_holiday = np.isin(days, demo_data._HOLIDAYS)
    return float(np.mean(np.abs(pred[on_holiday] - d.y_valid[on_holiday])))


def run_one(frame, algorithm: str, horizon: int, new: bool, root: Path) -> tuple[dict[str, float], float]:
    config = {
        "model_type": "forecast",
        "algorithm": algorithm,
        "hyperparameters": HP[algorithm],
        **WINDOW,
        "features": features(horizon, new),
        "target": "load",
        "forecast_horizon_hours": horizon,
        "known_ahead": ["temperature"],
        **({"holidays": HOLIDAYS} if new else {}),
    }
    job = spec.build(config)
    started = time.perf_counter()
    result = pipeline.run(job, data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry(root), num_threads=2)
    seconds = time.perf_counter() - started
    return {**result.metrics, "holiday_mae": holiday_mae(result, frame, job)}, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="lgbm,xgboost,rf,mlp,lstm")
    parser.add_argument("--horizons", default="1,24")
    args = parser.parse_args(argv)
    frame = demo_data.generate()
    algorithms = args.only.split(",")
    horizons = [int(h) for h in args.horizons.split(",")]
    print("quality: validation 2025-01-01 .. 2025-06-30 of the demo feeder (hourly), trained on 2023-01 .. 2024-12")
    print("  temperature is taken as known ahead (the demo's is the measured one: a perfect forecast)")
    print("  MAE on holidays: the validation hours of its five holidays (load like a Sunday's)")
    print(f"{'algorithm':10} {'ahead':>5} {'features':9} {'MAE':>7} {'MAPE %':>7} {'skill':>6} {'holidays':>9} {'seconds':>8}")
    for algorithm in algorithms:
        for horizon in horizons:
            runs = {}
            for new in (False, True):
                with tempfile.TemporaryDirectory(prefix="aihub-quality-") as root:
                    m, seconds = run_one(frame, algorithm, horizon, new, Path(root))
                runs[new] = m
                label = "derived" if new else "plain"
                print(
                    f"{algorithm:10} {horizon:>4}h {label:9} {m['mae']:7.3f} {m['mape']:7.2f} {m['skill']:6.3f} "
                    f"{m['holiday_mae']:9.3f} {seconds:8.1f}"
                )
            gain = 1 - runs[True]["mae"] / runs[False]["mae"]
            holiday_gain = 1 - runs[True]["holiday_mae"] / runs[False]["holiday_mae"]
            print(f"{'':10} {'':>5} {'gain':9} {gain:7.1%} {'':>7} {'':>6} {holiday_gain:9.1%}")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--only", "lgbm", "--horizons", "1"]

if __name__ == "__main__":
    main()
