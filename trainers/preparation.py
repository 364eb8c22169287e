"""Data preparation: sort a window's rows, derive the features, choose the task, drop
incomplete rows, and split chronologically into fit | tune | validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainers import algorithms, features, preprocessors
from trainers.algorithms import TrainData
from trainers.algorithms.base import Task
from trainers.errors import DataLoadError
from trainers.ports import Level, Reporter
from trainers.spec import ModelType, TrainingSpec
from trainers.spec.recipes import seasonal_lags

MIN_ROWS = 20
TUNE_FRACTION = 0.1  # the last part of the training range, for early stopping and thresholds


@dataclass(frozen=True)
class Derived:
    """The complete rows of a window with every feature derived."""

    frame: pd.DataFrame
    task: Task
    inputs: tuple[str, ...]
    baselines: Mapping[str, np.ndarray]
    label_column: str | None
    source: pd.DataFrame  # the window before deriving (sorted, preprocessed): other horizons derive from it


@dataclass(frozen=True)
class Prepared:
    data: TrainData
    frame: pd.DataFrame  # every complete row, derived, in time order
    rows: int
    split_at: pd.Timestamp
    task: Task
    inputs: tuple[str, ...]  # the model's input columns, in order
    baselines: Mapping[str, np.ndarray]  # seasonal-naive forecasts of the validation rows
    labels_valid: np.ndarray | None  # config.label_column on the validation rows
    source: pd.DataFrame  # the window before deriving (Derived.source)
    valid_rows: np.ndarray  # positions in ``frame`` of the validation rows, in order
    labels_train: np.ndarray | None = None  # config.label_column on the training rows (x_train's), for threshold.labelled


def is_label(values: pd.Series) -> bool:
    """Only 0 and 1 (missing values aside)."""
    present = values.dropna().to_numpy()
    return bool(len(present)) and bool(((present == 0) | (present == 1)).all())


def choose_task(spec: TrainingSpec, target: pd.Series) -> Task:
    """forecast: regression. anomaly: a 0/1 target is a label (supervised classification)
    for an algorithm that can classify; any other target is the monitored signal, scored the
    way the algorithm declares (``unlabelled_task``: the residual of a regression, or the
    model's own score of the rows)."""
    if spec.model_type == ModelType.FORECAST:
        return algorithms.REGRESSION
    algorithm = algorithms.get(spec.algorithm)
    if algorithms.CLASSIFICATION in algorithm.tasks and is_label(target):
        return algorithms.CLASSIFICATION
    return algorithm.unlabelled_task


def derive(
    frame: pd.DataFrame,
    spec: TrainingSpec,
    reporter: Reporter | None = None,
    *,
    forecast_after: pd.Timestamp | None = None,
    min_rows: int = MIN_ROWS,
) -> Derived:
    """Sort, derive features, choose the task and inputs, drop (and count) incomplete rows.
    With a ``series_id`` column, rows are ordered by series, then time, and lags and
    baselines stay within each series. ``forecast_after``: rows after this time are kept
    without a target (the hours to forecast), when their features are complete. Fewer than
    ``min_rows`` complete rows is a DataLoadError (a distributed job's shard checks the sum
    of its shards instead)."""
    if features.SERIES in frame.columns:
        if features.one_series(frame):
            frame = frame.drop(columns=features.SERIES)  # one series: the fast path
        else:
            frame = frame.assign(**{features.SERIES: frame[features.SERIES].astype("category")})
    keys = [k for k in (features.SERIES, "timestamp") if k in frame.columns]
    if keys == ["timestamp"] and features.strictly_increasing(frame["timestamp"]):
        frame = frame.reset_index(drop=True)  # already in order, nothing repeated: what sorting would give
    else:
        frame = frame.sort_values(keys, kind="stable").drop_duplicates(keys, keep="last").reset_index(drop=True)
    if np.isinf(frame.select_dtypes("number").to_numpy(dtype="float64")).any():
        frame = frame.replace([np.inf, -np.inf], np.nan)  # an infinite value is a missing one
    if spec.preprocessor:
        frame = preprocessors.apply(spec.preprocessor, frame)
    derived = features.derive(frame, spec)
    task = choose_task(spec, derived[spec.target])
    unsupervised = spec.model_type == ModelType.ANOMALY and task != algorithms.CLASSIFICATION
    target_is_label = is_label(derived[spec.target])
    label_column = spec.label_column or (spec.target if unsupervised and target_is_label else None)
    # A reconstruction model sees the monitored signal itself, but never a label.
    with_target = task == algorithms.RECONSTRUCTION and not target_is_label
    inputs = (*spec.features, spec.target) if with_target else tuple(spec.features)
    cols = list(dict.fromkeys([*spec.features, spec.target]))
    complete = derived[cols].notna().all(axis=1)
    if forecast_after is not None:
        complete |= derived[list(spec.features)].notna().all(axis=1) & (derived["timestamp"] > forecast_after)
    dropped = int((~complete).sum())
    if dropped and reporter is not None:
        lag_note = f" (the first {max(h for _, h in spec.lags.values())} h have no lag values)" if spec.lags else ""
        reporter.log(Level.INFO, f"dropped {dropped} of {len(derived)} rows with missing values{lag_note}")
    baselines = {}
    if spec.model_type == ModelType.FORECAST:
        lags = seasonal_lags(spec.forecast_horizon_hours)
        baselines = {f"{h}h": features.lag(frame, spec.target, h)[complete].to_numpy() for h in dict.fromkeys(lags)}
    derived = derived[complete].reset_index(drop=True)
    if len(derived) < min_rows:
        raise too_few_rows(len(derived), spec)
    return Derived(derived, task, inputs, baselines, label_column if unsupervised else None, frame)


def too_few_rows(rows: int, spec: TrainingSpec) -> DataLoadError:
    return DataLoadError(
        f"only {rows} complete rows in features.{spec.feature_table} after deriving features; at least {MIN_ROWS} are needed",
        details={"table": f"features.{spec.feature_table}", "rows": rows},
    )


def too_short(first: pd.Timestamp, last: pd.Timestamp, spec: TrainingSpec) -> DataLoadError:
    return DataLoadError(
        f"the time range {first} .. {last} is too short to split {spec.validation_split:.0%} off for validation",
        details={"table": f"features.{spec.feature_table}"},
    )


def wants_tune(spec: TrainingSpec, task: Task) -> bool:
    """Whether the last TUNE_FRACTION of the training rows is held out as the tune part: for
    early stopping, a classifier's threshold, a search's folds, the quantiles' calibration."""
    return bool(spec.early_stopping_rounds or task == algorithms.CLASSIFICATION or spec.tuning or spec.quantiles)


def validation_rows(derived: pd.DataFrame, spec: TrainingSpec) -> tuple[np.ndarray, pd.Timestamp]:
    """The rows in the last ``validation_split`` of each series' own time range (rows in
    time order per series), and the split time (the latest one over series)."""
    stamps = derived["timestamp"]
    series = derived[features.SERIES].cat.codes if features.SERIES in derived.columns else None
    if series is None:
        first, last = stamps.iloc[0], stamps.iloc[-1]
    else:
        first, last = stamps.groupby(series).transform("min"), stamps.groupby(series).transform("max")
    cut = first + (last - first) * (1.0 - spec.validation_split)
    return (stamps > cut).to_numpy(), (cut if series is None else cut.max())


def prepare(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> Prepared:
    """Derive features, drop incomplete rows, split chronologically (never shuffled)."""
    dv = derive(frame, spec, reporter)
    derived, task, inputs, label_column = dv.frame, dv.task, dv.inputs, dv.label_column
    baselines = dv.baselines
    # The last validation_split of each series' own time range validates.
    stamps = derived["timestamp"]
    series = derived[features.SERIES].cat.codes if features.SERIES in derived.columns else None
    valid, split_at = validation_rows(derived, spec)
    if valid.all() or not valid.any():
        raise too_short(stamps.min(), stamps.max(), spec)
    n_series = 1 if series is None else series.nunique()
    if n_series > 1:
        reporter.log(Level.INFO, f"preprocessing: {n_series} series; lags, splits and baselines within each")
        if algorithms.get(spec.algorithm).context_rows(spec.hyperparameters):
            note = "a validation window may still start in the series before"
            reporter.log(Level.INFO, f"{spec.algorithm} trains on windows within each series; {note}")
    x = derived[list(inputs)].to_numpy(dtype="float64")
    y = derived[spec.target].to_numpy(dtype="float64")
    train_idx = np.flatnonzero(~valid)
    tune_idx = np.empty(0, dtype=int)
    if wants_tune(spec, task):
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
        keep = max(1, round(len(train_idx) * spec.use_sample))
        train_idx = np.sort(rng.choice(train_idx, size=keep, replace=False))
        reporter.log(Level.INFO, f"use_sample={spec.use_sample}: training on {keep} sampled rows (seed {spec.random_seed})")
    labels_valid = derived[label_column].to_numpy(dtype="float64")[valid] if label_column else None
    labels_train = derived[label_column].to_numpy(dtype="float64")[train_idx] if label_column else None
    codes = series.to_numpy() if series is not None and n_series > 1 else None
    groups, tune_groups = (None, None) if codes is None else (codes[train_idx], codes[tune_idx])
    data = TrainData(x[train_idx], y[train_idx], x[valid], y[valid], inputs, x[tune_idx], y[tune_idx], groups, tune_groups)
    return Prepared(
        data,
        derived,
        len(train_idx) + len(tune_idx) + int(valid.sum()),
        split_at,
        task,
        inputs,
        {k: v[valid] for k, v in baselines.items()},
        labels_valid,
        dv.source,
        np.flatnonzero(valid),
        labels_train,
    )
