"""The five steps: data_loading, preprocessing, training, evaluation, registration.

Each step reports its progress and log lines through a :class:`Reporter`; the data
comes from a :class:`DataSource` and the model goes to a :class:`ModelRegistry`, so the
pipeline knows nothing of gRPC, SQL or Ray.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from trainers import algorithms, features, metrics
from trainers.algorithms import TrainData
from trainers.errors import DataLoadError
from trainers.spec import TrainingSpec

STEPS = ("data_loading", "preprocessing", "training", "evaluation", "registration")
# Progress (percent) at the start of each step; training fills 20..80 as rounds complete.
STEP_START = {"data_loading": 0, "preprocessing": 10, "training": 20, "evaluation": 80, "registration": 90}
MIN_ROWS = 20
GPU_ALGORITHMS = ("mlp", "lstm")  # the CPU builds of LightGBM/XGBoost installed here have no GPU support


class Reporter(Protocol):
    """Where the pipeline reports. Any call may raise JobCancelled to stop the run."""

    def step(self, name: str, progress: int) -> None: ...

    def progress(self, progress: int) -> None: ...

    def log(self, level: str, message: str) -> None: ...

    def metrics(self, values: Mapping[str, float]) -> None: ...


class DataSource(Protocol):
    def load(self, table: str, columns: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        """The rows (a UTC ``timestamp`` column plus ``columns``) in start..end; raises
        DataLoadError naming the table or column that is missing."""
        ...


class ModelRegistry(Protocol):
    def artifact_dir(self) -> Path:
        """A fresh folder under the artifact root for this run's model."""
        ...

    def register(self, artifact: Path, spec: TrainingSpec, metrics: Mapping[str, float], importance: Mapping[str, float]) -> int:
        """Record the model (with its feature importance); returns its version number."""
        ...


@dataclass(frozen=True)
class Result:
    metrics: Mapping[str, float]
    model_version: int
    artifact: Path
    importance: Mapping[str, float]


@dataclass(frozen=True)
class Prepared:
    data: TrainData
    frame: pd.DataFrame  # every complete row, derived, in time order
    rows: int
    split_at: pd.Timestamp
    task: str
    inputs: tuple[str, ...]  # the model's input columns, in order
    baselines: Mapping[str, np.ndarray]  # seasonal-naive forecasts of the validation rows
    labels_valid: np.ndarray | None  # config.label_column on the validation rows


TUNE_FRACTION = 0.1  # the last part of the training range, for early stopping and thresholds
MIN_TUNE_POSITIVES = 5  # fewer labelled anomalies there: choose the threshold on all training rows
ANOMALY_QUANTILE = 0.99  # unlabeled anomaly threshold: this quantile of the training scores


def is_label(values: pd.Series) -> bool:
    """Only 0 and 1 (missing values aside)."""
    present = values.dropna().to_numpy()
    return bool(len(present)) and bool(((present == 0) | (present == 1)).all())


def choose_task(spec: TrainingSpec, target: pd.Series) -> str:
    """forecast: regression. anomaly: isolation_forest scores rows; a 0/1 target is a label
    (supervised classification); any other target is the monitored signal (lstm: an
    autoencoder's reconstruction error; the others: the residual of a regression)."""
    if spec.model_type == "forecast":
        return algorithms.REGRESSION
    if spec.algorithm == "isolation_forest":
        return algorithms.RECONSTRUCTION
    if is_label(target):
        return algorithms.CLASSIFICATION
    return algorithms.RECONSTRUCTION if spec.algorithm == "lstm" else algorithms.REGRESSION


@dataclass(frozen=True)
class Derived:
    """The complete rows of a window with every feature derived."""

    frame: pd.DataFrame
    task: str
    inputs: tuple[str, ...]
    baselines: Mapping[str, np.ndarray]
    label_column: str | None


def derive(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter | None = None) -> Derived:
    """Sort, derive features, choose the task and inputs, drop (and count) incomplete rows.
    With a ``series_id`` column, rows are ordered by series, then time, and lags and
    baselines stay within each series."""
    if features.SERIES in frame.columns:
        if frame[features.SERIES].nunique() <= 1:
            frame = frame.drop(columns=features.SERIES)  # one series: the fast path
        else:
            frame = frame.assign(**{features.SERIES: frame[features.SERIES].astype("category")})
    keys = [k for k in (features.SERIES, "timestamp") if k in frame.columns]
    frame = frame.sort_values(keys, kind="stable").drop_duplicates(keys, keep="last").reset_index(drop=True)
    derived = features.derive(frame, spec)
    task = choose_task(spec, derived[spec.target])
    unsupervised = spec.model_type == "anomaly" and task != algorithms.CLASSIFICATION
    target_is_label = is_label(derived[spec.target])
    label_column = spec.label_column or (spec.target if unsupervised and target_is_label else None)
    # A reconstruction model sees the monitored signal itself, but never a label.
    with_target = task == algorithms.RECONSTRUCTION and not target_is_label
    inputs = (*spec.features, spec.target) if with_target else tuple(spec.features)
    cols = list(dict.fromkeys([*spec.features, spec.target]))
    complete = derived[cols].notna().all(axis=1)
    dropped = int((~complete).sum())
    if dropped and reporter is not None:
        lag_note = f" (the first {max(h for _, h in spec.lags.values())} h have no lag values)" if spec.lags else ""
        reporter.log("INFO", f"dropped {dropped} of {len(derived)} rows with missing values{lag_note}")
    baselines = {}
    if spec.model_type == "forecast":
        baselines = {f"{h}h": features.lag(frame, spec.target, h)[complete].to_numpy() for h in (24, 168)}
    derived = derived[complete].reset_index(drop=True)
    if len(derived) < MIN_ROWS:
        raise DataLoadError(
            f"only {len(derived)} complete rows in features.{spec.feature_table} after deriving features; at least {MIN_ROWS} are needed",
            details={"table": f"features.{spec.feature_table}", "rows": len(derived)},
        )
    return Derived(derived, task, inputs, baselines, label_column if unsupervised else None)


def prepare(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> Prepared:
    """Derive features, drop incomplete rows, split chronologically (never shuffled)."""
    dv = derive(frame, spec, reporter)
    derived, task, inputs, label_column = dv.frame, dv.task, dv.inputs, dv.label_column
    baselines = dv.baselines
    # The last validation_split of each series' own time range validates.
    stamps = derived["timestamp"]
    series = derived[features.SERIES].cat.codes if features.SERIES in derived.columns else None
    if series is None:
        first, last = stamps.iloc[0], stamps.iloc[-1]  # rows are in time order
    else:
        first, last = stamps.groupby(series).transform("min"), stamps.groupby(series).transform("max")
    cut = first + (last - first) * (1.0 - spec.validation_split)
    valid = (stamps > cut).to_numpy()
    split_at = cut if series is None else cut.max()
    if valid.all() or not valid.any():
        raise DataLoadError(
            f"the time range {stamps.min()} .. {stamps.max()} is too short to split {spec.validation_split:.0%} off for validation",
            details={"table": f"features.{spec.feature_table}"},
        )
    n_series = 1 if series is None else series.nunique()
    if n_series > 1:
        reporter.log("INFO", f"preprocessing: {n_series} series; lags, splits and baselines within each")
        if spec.algorithm == "lstm":
            reporter.log("WARNING", "lstm windows are cut from rows ordered by series then time; a window may span two series")
    x = derived[list(inputs)].to_numpy(dtype="float64")
    y = derived[spec.target].to_numpy(dtype="float64")
    train_idx = np.flatnonzero(~valid)
    tune_idx = np.empty(0, dtype=int)
    if spec.early_stopping_rounds or task == algorithms.CLASSIFICATION:
        # The last TUNE_FRACTION of each series' training rows (rows are in time order per series).
        if series is None:
            cut_at = int(len(train_idx) * (1 - TUNE_FRACTION))
            train_idx, tune_idx = train_idx[:cut_at], train_idx[cut_at:]
        else:
            in_train = series.iloc[train_idx]
            rank = in_train.groupby(in_train).cumcount().to_numpy()
            size = in_train.groupby(in_train).transform("size").to_numpy()
            tune = rank >= np.floor(size * (1 - TUNE_FRACTION))
            train_idx, tune_idx = train_idx[~tune], train_idx[tune]
    if spec.use_sample is not None and spec.use_sample < 1.0:
        rng = np.random.default_rng(spec.random_seed)
        keep = max(1, int(round(len(train_idx) * spec.use_sample)))
        train_idx = np.sort(rng.choice(train_idx, size=keep, replace=False))
        reporter.log("INFO", f"use_sample={spec.use_sample}: training on {keep} sampled rows (seed {spec.random_seed})")
    if label_column:
        labels_valid = derived[label_column].to_numpy(dtype="float64")[valid]
    else:
        labels_valid = None
    data = TrainData(x[train_idx], y[train_idx], x[valid], y[valid], inputs, x[tune_idx], y[tune_idx])
    return Prepared(
        data,
        derived,
        len(train_idx) + len(tune_idx) + int(valid.sum()),
        split_at,
        task,
        inputs,
        {k: v[valid] for k, v in baselines.items()},
        labels_valid,
    )


class _IterationReporter:
    """Turns boosting rounds into progress 20..80, at most every 0.25 s."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.last = 0.0

    def __call__(self, iteration: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.25 and iteration < total:
            return
        self.last = now
        span = STEP_START["evaluation"] - STEP_START["training"]
        self.reporter.progress(STEP_START["training"] + int(span * iteration / max(total, 1)))


def _predict_after(model: algorithms.FittedModel, context: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predictions for the rows of ``x``; a model that needs earlier rows (lstm windows)
    gets them from the end of ``context``."""
    if model.context_rows:
        return model.predict(np.concatenate([context[len(context) - model.context_rows :], x]))
    return model.predict(x)


def evaluate(model: algorithms.FittedModel, prepared: Prepared, spec: TrainingSpec, reporter: Reporter) -> dict[str, float]:
    d = prepared.data
    history = np.concatenate([d.x_train, d.x_tune]) if len(d.x_tune) else d.x_train
    pred = _predict_after(model, history, d.x_valid)
    if prepared.task == algorithms.CLASSIFICATION:
        if d.y_tune.sum() >= MIN_TUNE_POSITIVES:
            tune_y, tune_pred = d.y_tune, _predict_after(model, d.x_train, d.x_tune)
        else:  # no positive label in the tune part: choose on the training rows themselves
            tune_y, tune_pred = d.y_train[model.context_rows :], model.predict(d.x_train)
        threshold = metrics.best_f1_threshold(tune_y, tune_pred)
        scores = metrics.classification(d.y_valid, pred, threshold)
        reporter.log(
            "INFO", f"evaluation: threshold {threshold:.4f} chosen on the training range (best F1 on its last {TUNE_FRACTION:.0%})"
        )
        return scores
    if spec.model_type == "forecast":
        scores = metrics.regression(d.y_valid, pred)
        scores.update(metrics.baseline(d.y_valid, scores["mae"], prepared.baselines))
        if "skill" in scores and scores["skill"] <= 0:
            reporter.log(
                "WARNING",
                f"the model does not beat the seasonal-naive baseline: MAE {scores['mae']:.3f} vs {scores['baseline_mae']:.3f} (skill {scores['skill']:.3f})",
            )
        return scores
    # Unlabeled anomaly detection: a score per row, a threshold from the training range.
    if prepared.task == algorithms.RECONSTRUCTION:
        train_scores, valid_scores = model.predict(d.x_train), pred
    else:
        train_pred = model.predict(d.x_train)
        train_scores = np.abs(d.y_train[model.context_rows :] - train_pred)
        valid_scores = np.abs(d.y_valid - pred)
    threshold = float(np.quantile(train_scores, ANOMALY_QUANTILE))
    scores = metrics.anomaly_scores(valid_scores, threshold)
    if prepared.labels_valid is not None:
        scores.update(metrics.classification(prepared.labels_valid, valid_scores, threshold))
    reporter.log(
        "INFO",
        f"evaluation: threshold {threshold:.4f} = the {ANOMALY_QUANTILE:.0%} quantile of training scores; "
        f"{scores['anomaly_rate']:.2%} of validation rows flagged",
    )
    return scores


def history_hours(spec: TrainingSpec) -> int:
    """Hours before a window that scoring reads too, so that lags, seasonal baselines and
    LSTM windows of its first rows have their past."""
    lookback = int(spec.hyperparameters.get("lookback", 24)) if spec.algorithm == "lstm" else 0
    return max([h for _, h in spec.lags.values()] + [168]) + lookback + 24


def backtest(prepared: Prepared, spec: TrainingSpec, options: algorithms.FitOptions, reporter: Reporter) -> dict[str, float]:
    """Rolling origin: the last folds x horizon hours of the range are cut into consecutive
    windows; each fold trains on every row before its window (no early stopping) and is
    scored on it. Returns per-fold and mean MAE, RMSE and MAPE."""
    folds, horizon = spec.backtest
    frame, algorithm = prepared.frame, algorithms.get(spec.algorithm)
    x = frame[list(prepared.inputs)].to_numpy(dtype="float64")
    y = frame[spec.target].to_numpy(dtype="float64")
    end = frame["timestamp"].max()
    quiet = dataclasses.replace(options, early_stopping_rounds=None, on_iteration=lambda i, n: None)
    out: dict[str, float] = {}
    per_fold = []
    for k in range(folds):
        lo = end - pd.Timedelta(hours=horizon * (folds - k))
        hi = lo + pd.Timedelta(hours=horizon)
        train = (frame["timestamp"] <= lo).to_numpy()
        test = ((frame["timestamp"] > lo) & (frame["timestamp"] <= hi)).to_numpy()
        if train.sum() < MIN_ROWS or not test.any():
            raise DataLoadError(f"backtest fold {k + 1} has too few rows (train {int(train.sum())}, test {int(test.sum())})")
        model = algorithm.fit(TrainData(x[train], y[train], x[test], y[test], prepared.inputs), spec.hyperparameters, quiet)
        train_idx = np.flatnonzero(train)
        pred = _predict_after(model, x[train_idx], x[test])
        m = metrics.regression(y[test], pred)
        per_fold.append(m)
        for name in ("mae", "rmse", "mape"):
            out[f"backtest_fold{k + 1}_{name}"] = m[name]
        reporter.progress(STEP_START["evaluation"] + int(10 * (k + 1) / folds) - 1)
    for name in ("mae", "rmse", "mape"):
        out[f"backtest_{name}"] = float(np.mean([m[name] for m in per_fold]))
    reporter.log(
        "INFO", f"backtest: {folds} folds of {horizon} h, mean MAE {out['backtest_mae']:.4g}, mean RMSE {out['backtest_rmse']:.4g}"
    )
    return out


def score(model: algorithms.FittedModel, frame: pd.DataFrame, spec: TrainingSpec, trained: Mapping[str, float]) -> dict[str, float]:
    """Score a trained model on the window spec.training_start..training_end (``frame`` may
    start earlier: those rows are history only), with the metrics it was trained with;
    anomaly thresholds are the ones chosen at training time."""
    dv = derive(frame, spec)
    x = dv.frame[list(dv.inputs)].to_numpy(dtype="float64")
    keep = (dv.frame["timestamp"].iloc[model.context_rows :] >= pd.Timestamp(spec.training_start)).to_numpy()
    y = dv.frame[spec.target].to_numpy(dtype="float64")[model.context_rows :][keep]
    if len(y) == 0:
        raise DataLoadError(f"no complete rows in the window for a model that needs {model.context_rows + 1} consecutive rows")
    pred = model.predict(x)[keep]
    threshold = trained.get("threshold")
    if dv.task == algorithms.CLASSIFICATION:
        out = metrics.classification(y, pred, threshold)
    elif spec.model_type == "forecast":
        out = metrics.regression(y, pred)
        out.update(metrics.baseline(y, out["mae"], {k: v[model.context_rows :][keep] for k, v in dv.baselines.items()}))
    else:
        scores = pred if dv.task == algorithms.RECONSTRUCTION else np.abs(y - pred)
        out = metrics.anomaly_scores(scores, threshold)
        if dv.label_column:
            labels = dv.frame[dv.label_column].to_numpy(dtype="float64")[model.context_rows :][keep]
            out.update(metrics.classification(labels, scores, threshold))
    out["evaluation_rows"] = float(len(y))
    return {k: float(v) for k, v in out.items() if not math.isnan(v)}


def run(spec: TrainingSpec, *, data: DataSource, reporter: Reporter, registry: ModelRegistry, num_threads: int = 1) -> Result:
    reporter.step("data_loading", STEP_START["data_loading"])
    columns = spec.table_columns()
    reporter.log(
        "INFO",
        f"loading {', '.join(columns)} from features.{spec.feature_table} for {spec.training_start:%Y-%m-%d %H:%M} .. {spec.training_end:%Y-%m-%d %H:%M} UTC",
    )
    frame = data.load(spec.feature_table, columns, spec.training_start, spec.training_end)
    if frame.empty:
        raise DataLoadError(
            f"No rows in features.{spec.feature_table} between {spec.training_start:%Y-%m-%dT%H:%M:%S} and {spec.training_end:%Y-%m-%dT%H:%M:%S}",
            details={"reason": f"No rows in window: features.{spec.feature_table}", "table": f"features.{spec.feature_table}"},
        )
    reporter.log("INFO", f"data_loading: {len(frame)} rows loaded")

    reporter.step("preprocessing", STEP_START["preprocessing"])
    prepared = prepare(frame, spec, reporter)
    d = prepared.data
    tune = f", {len(d.y_tune)} tune rows" if len(d.y_tune) else ""
    reporter.log(
        "INFO",
        f"preprocessing: {prepared.task} on {len(prepared.inputs)} inputs; {len(d.y_train)} training rows{tune}, "
        f"{len(d.y_valid)} validation rows (split at {prepared.split_at:%Y-%m-%d %H:%M})",
    )

    reporter.step("training", STEP_START["training"])
    algorithm = algorithms.get(spec.algorithm)
    reporter.log(
        "INFO", f"training: {spec.algorithm} with {dict(spec.hyperparameters) or 'default hyperparameters'}, seed {spec.random_seed}"
    )
    options = algorithms.FitOptions(
        task=prepared.task,
        seed=spec.random_seed,
        early_stopping_rounds=spec.early_stopping_rounds,
        num_threads=num_threads,
        batch_size=spec.batch_size,
        use_gpu=spec.use_gpu,
        on_iteration=_IterationReporter(reporter),
    )
    importlib.import_module(algorithm.library)  # a first import is not training time
    started = time.perf_counter()
    model = algorithm.fit(d, spec.hyperparameters, options)
    duration = time.perf_counter() - started
    note = f", best iteration {model.best_iteration}" if model.best_iteration else ""
    if spec.use_gpu and spec.algorithm not in GPU_ALGORITHMS:
        reporter.log("WARNING", f"use_gpu applies to {' and '.join(GPU_ALGORITHMS)}; {spec.algorithm} trained on the CPU")
    elif spec.use_gpu and getattr(model, "device", None) != "cuda":
        reporter.log("WARNING", "use_gpu was asked for but this node has no GPU: trained on the CPU")
    reporter.log("INFO", f"training: done in {duration:.2f} s{note}")

    reporter.step("evaluation", STEP_START["evaluation"])
    scores = evaluate(model, prepared, spec, reporter)
    if spec.backtest:
        scores.update(backtest(prepared, spec, options, reporter))
    scores.update(
        training_duration_seconds=round(duration, 3),
        training_data_size=float(prepared.rows),
        train_rows=float(len(d.y_train)),
        validation_rows=float(len(d.y_valid)),
    )
    if model.best_iteration:
        scores["best_iteration"] = float(model.best_iteration)
    scores = {k: float(v) for k, v in scores.items() if not (isinstance(v, float) and math.isnan(v))}
    reporter.metrics(scores)
    reporter.log("INFO", "evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k in metrics.HEADLINE))
    importance = model.importance(prepared.inputs)
    if importance:
        top = sorted(importance.items(), key=lambda kv: -kv[1])[:5]
        reporter.log("INFO", "feature importance (gain share): " + ", ".join(f"{k} {v:.1%}" for k, v in top))

    reporter.step("registration", STEP_START["registration"])
    folder = registry.artifact_dir()
    artifact = model.save(folder)
    version = registry.register(artifact, spec, scores, importance)
    reporter.log("INFO", f"registration: model version {version} saved to {artifact}")
    return Result(scores, version, artifact, importance)
