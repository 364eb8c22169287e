"""Forecast quality 1 h and 24 h ahead, in three tables.

1. Each algorithm with and without the derived features (holidays, degree hours, rolling
   statistics, differences), on generated data with a known signal: the demo feeder
   (server/demo_data.py: daily and weekly cycles, heating below 15 °C, cooling above 22 °C,
   public holidays that look like Sundays, AR(1) noise), 2023-01 .. 2025-06, validated on its
   last 20 % (2025-01 .. 2025-06, five holidays).
2. The search against a hand-tuned config (issue 25): the guide's default config, the same
   with ``"tuning": {"num_trials": N}`` alone (its built-in space, Optuna's TPE, rolling-origin
   folds; the guide's fixed hyperparameters left to the search) and the hand-set config
   (learning rate 0.05, 1,000 rounds with early stopping, 63 leaves), all with the derived
   features, on the demo feeder and on a real public load series a PyPI package ships:
   Taylor's half-hourly England and Wales demand, 5 June .. 27 August 2000 (pmdarima),
   averaged to hours.
3. Quantiles: the 80 % interval's coverage and width, and the pinball loss, of
   ``"quantiles": [0.1, 0.5, 0.9]`` on the demo feeder.

Each row is one job's pipeline (trainers.pipeline.run with in-memory ports: the same code a
job runs, without the service around it; a search runs its trials on a local Ray through the
service's own tuner). MAE and MAPE are on the validation part; skill is 1 - MAE / the
seasonal-naive MAE at the same horizon.

    python -m bench.quality [--only lgbm,xgboost] [--horizons 1,24] [--trials 30] [--datasets demo,taylor]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

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


# The guide's default config's hyperparameters, and the hand-set config of issue 25.
GUIDE_HP = {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 7, "num_leaves": 31}
HAND_TUNED = {"hyperparameters": {"n_estimators": 1000, "learning_rate": 0.05, "num_leaves": 63}, "early_stopping_rounds": 50}
# Taylor's series starts on Monday 5 June 2000 at midnight, British Summer Time.
TAYLOR_START = "2000-06-04T23:00:00Z"


def taylor() -> pd.DataFrame:
    """Taylor's England and Wales demand (MW), 4,032 half-hours, as 2,016 hourly means."""
    from pmdarima.datasets import load_taylor

    half = np.asarray(load_taylor(as_series=False), dtype="float64")
    hourly = half.reshape(-1, 2).mean(axis=1)
    stamps = pd.date_range(TAYLOR_START, periods=len(hourly), freq="h", tz="UTC")
    return pd.DataFrame({"timestamp": stamps, "load": hourly})


def datasets(names: list[str], demo: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Each dataset's frame and the config fields that fit it (window, features)."""
    out: dict[str, tuple[pd.DataFrame, dict]] = {}
    for name in names:
        if name == "demo":
            out[name] = (demo, {**WINDOW, "known_ahead": ["temperature"], "holidays": HOLIDAYS})
        elif name == "taylor":
            frame = taylor()
            window = {"training_start": TAYLOR_START.rstrip("Z"), "training_end": f"{frame['timestamp'].iloc[-1]:%Y-%m-%dT%H:%M:%S}"}
            out[name] = (frame, {**window, "validation_split": 0.2, "timezone": "Europe/London"})
        else:
            raise SystemExit(f"--datasets: {name!r} is not one of demo, taylor")
    return out


def features_of(name: str, horizon: int) -> list[str]:
    chosen = features(horizon, True)
    if name == "taylor":  # no temperature, and no holiday in its twelve summer weeks
        chosen = [f for f in chosen if not f.startswith("temperature") and "holiday" not in f]
    return chosen


def run_job(frame: pd.DataFrame, config: dict, root: Path, tuner=None) -> tuple[dict[str, float], float, list[str]]:
    job = spec.build(config)
    reporter = MemoryReporter()
    started = time.perf_counter()
    result = pipeline.run(job, data=FrameSource(frame), reporter=reporter, registry=FolderRegistry(root), num_threads=2, tuner=tuner)
    return result.metrics, time.perf_counter() - started, [line for _, line in reporter.lines]


def ray_tuner():
    """The service's tuner (Ray Tune, one CPU per trial) on a local Ray, started here unless
    this process already has one; and whether it was started here."""
    import ray

    from server.execution.tuning import RayTuner

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return RayTuner(cpus_per_trial=1.0, seed=42), started


def search_table(names: list[str], horizons: list[int], trials: int, demo: pd.DataFrame) -> None:
    import ray

    tuner, started = ray_tuner()
    print()
    print(f'search: the guide\'s default config, the same with "tuning": {{"num_trials": {trials}}} alone, and a hand-set config;')
    print("  lgbm with the derived features; 2 trials at a time, one CPU each; validation MAE / MAPE %")
    head = f"{'data':7} {'ahead':>5} {'default':>16} {'hand-tuned':>16} {'searched':>16} {'vs hand':>8} {'rounds':>7} {'seconds':>8}"
    print(head)
    try:
        for name, (frame, fields) in datasets(names, demo).items():
            for horizon in horizons:
                base = {
                    "model_type": "forecast", "algorithm": "lgbm", "target": "load", "random_seed": 42,
                    "features": features_of(name, horizon), "forecast_horizon_hours": horizon, **fields,
                }  # fmt: skip
                got = {}
                with tempfile.TemporaryDirectory(prefix="aihub-quality-") as root:
                    got["default"] = run_job(frame, {**base, "hyperparameters": GUIDE_HP}, Path(root) / "a")
                    got["hand"] = run_job(frame, {**base, **HAND_TUNED}, Path(root) / "b")
                    searched = {**base, "hyperparameters": {}, "tuning": {"num_trials": trials, "max_concurrent_trials": 2}}
                    got["searched"] = run_job(frame, searched, Path(root) / "c", tuner)
                cells = " ".join(f"{got[k][0]['mae']:9.4g} / {got[k][0]['mape']:4.2f}" for k in ("default", "hand", "searched"))
                ratio = got["searched"][0]["mae"] / got["hand"][0]["mae"]
                best = next(line for line in got["searched"][2] if line.startswith("tuning: best trial"))
                rounds = best.split("whole training range for ")[1].split(" rounds")[0] if "range for " in best else "-"
                print(f"{name:7} {horizon:>4}h {cells} {ratio:8.3f} {rounds:>7} {got['searched'][1]:8.1f}")
    finally:
        if started:
            ray.shutdown()
    print("  vs hand: the searched MAE over the hand-tuned one (goal <= 1.03); rounds: the final model's, from its folds")


def quantile_table(horizons: list[int], demo: pd.DataFrame) -> None:
    print()
    print('quantiles: lgbm with "quantiles": [0.1, 0.5, 0.9] on the demo feeder (split conformal on the tune part)')
    print(f"{'ahead':>5} {'coverage 80%':>13} {'width':>8} {'pinball':>8} {'q10':>8} {'q90':>8} {'skill':>6}")
    for horizon in horizons:
        config = {
            "model_type": "forecast", "algorithm": "lgbm", "hyperparameters": HP["lgbm"], **WINDOW, "target": "load",
            "features": features(horizon, True), "forecast_horizon_hours": horizon, "known_ahead": ["temperature"],
            "holidays": HOLIDAYS, "quantiles": [0.1, 0.5, 0.9],
        }  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="aihub-quality-") as root:
            m, _, _ = run_job(demo, config, Path(root))
        print(
            f"{horizon:>4}h {m['interval_coverage']:12.1%} {m['interval_width']:8.3f} {m['pinball_loss']:8.4f} "
            f"{m['pinball_loss_q10']:8.4f} {m['pinball_loss_q90']:8.4f} {m.get('pinball_skill', float('nan')):6.3f}"
        )
    print("  goal: the 80 % interval covers 77-83 % of validation hours")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="lgbm,xgboost,rf,mlp,lstm", help="table 1's algorithms ('' for none)")
    parser.add_argument("--horizons", default="1,24")
    parser.add_argument("--trials", type=int, default=30, help="table 2's search size (0: no table 2)")
    parser.add_argument("--datasets", default="demo,taylor", help="table 2's data: demo, taylor")
    parser.add_argument("--no-quantiles", action="store_true", help="leave out table 3")
    args = parser.parse_args(argv)
    frame = demo_data.generate()
    algorithms = [a for a in args.only.split(",") if a]
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
    if args.trials:
        search_table(args.datasets.split(","), horizons, args.trials, frame)
    if not args.no_quantiles:
        quantile_table(horizons, frame)


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--only", "lgbm", "--horizons", "1", "--trials", "2", "--datasets", "taylor"]

if __name__ == "__main__":
    main()
