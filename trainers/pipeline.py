"""The five steps: data_loading, preprocessing, training, evaluation, registration.

Each step reports its progress and log lines through a :class:`Reporter`; the data
comes from a :class:`DataSource` and the model goes to a :class:`ModelRegistry`, so the
pipeline knows nothing of gRPC, SQL or Ray.
"""

from __future__ import annotations

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

    def register(self, artifact: Path, spec: TrainingSpec, metrics: Mapping[str, float]) -> int:
        """Record the model; returns its version number."""
        ...


@dataclass(frozen=True)
class Result:
    metrics: Mapping[str, float]
    model_version: int
    artifact: Path


@dataclass(frozen=True)
class Prepared:
    data: TrainData
    rows: int
    split_at: pd.Timestamp


def prepare(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> Prepared:
    """Derive features, drop incomplete rows, split chronologically (never shuffled)."""
    frame = frame.sort_values("timestamp", kind="stable").drop_duplicates("timestamp", keep="last").reset_index(drop=True)
    derived = features.derive(frame, spec)
    cols = [*spec.features, spec.target]
    complete = derived[cols].notna().all(axis=1)
    dropped = int((~complete).sum())
    if dropped:
        lag_note = f" (the first {max(h for _, h in spec.lags.values())} h have no lag values)" if spec.lags else ""
        reporter.log("INFO", f"dropped {dropped} of {len(derived)} rows with missing values{lag_note}")
    derived = derived[complete].reset_index(drop=True)
    if len(derived) < MIN_ROWS:
        raise DataLoadError(
            f"only {len(derived)} complete rows in features.{spec.feature_table} after deriving features; at least {MIN_ROWS} are needed",
            details={"table": f"features.{spec.feature_table}", "rows": len(derived)},
        )
    first, last = derived["timestamp"].iloc[0], derived["timestamp"].iloc[-1]
    split_at = first + (last - first) * (1.0 - spec.validation_split)
    valid = (derived["timestamp"] > split_at).to_numpy()
    if valid.all() or not valid.any():
        raise DataLoadError(
            f"the time range {first} .. {last} is too short to split {spec.validation_split:.0%} off for validation",
            details={"table": f"features.{spec.feature_table}"},
        )
    x = derived[list(spec.features)].to_numpy(dtype="float64")
    y = derived[spec.target].to_numpy(dtype="float64")
    train_idx = np.flatnonzero(~valid)
    if spec.use_sample is not None and spec.use_sample < 1.0:
        rng = np.random.default_rng(spec.random_seed)
        keep = max(1, int(round(len(train_idx) * spec.use_sample)))
        train_idx = np.sort(rng.choice(train_idx, size=keep, replace=False))
        reporter.log("INFO", f"use_sample={spec.use_sample}: training on {keep} sampled rows (seed {spec.random_seed})")
    data = TrainData(x[train_idx], y[train_idx], x[valid], y[valid], tuple(spec.features))
    return Prepared(data, len(train_idx) + int(valid.sum()), split_at)


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


def run(spec: TrainingSpec, *, data: DataSource, reporter: Reporter, registry: ModelRegistry, num_threads: int = 1) -> Result:
    reporter.step("data_loading", STEP_START["data_loading"])
    columns = spec.table_columns()
    reporter.log("INFO", f"loading {', '.join(columns)} from features.{spec.feature_table} for {spec.training_start:%Y-%m-%d %H:%M} .. {spec.training_end:%Y-%m-%d %H:%M} UTC")
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
    reporter.log(
        "INFO",
        f"preprocessing: {len(spec.features)} features; {len(d.y_train)} training rows, {len(d.y_valid)} validation rows (split at {prepared.split_at:%Y-%m-%d %H:%M})",
    )

    reporter.step("training", STEP_START["training"])
    algorithm = algorithms.get(spec.algorithm)
    reporter.log("INFO", f"training: {spec.algorithm} with {dict(spec.hyperparameters) or 'default hyperparameters'}, seed {spec.random_seed}")
    started = time.perf_counter()
    model = algorithm.fit(
        d,
        spec.hyperparameters,
        seed=spec.random_seed,
        early_stopping_rounds=spec.early_stopping_rounds,
        num_threads=num_threads,
        on_iteration=_IterationReporter(reporter),
    )
    duration = time.perf_counter() - started
    note = f", best iteration {model.best_iteration}" if model.best_iteration else ""
    reporter.log("INFO", f"training: done in {duration:.2f} s{note}")

    reporter.step("evaluation", STEP_START["evaluation"])
    scores = metrics.regression(d.y_valid, model.predict(d.x_valid))
    scores.update(
        training_duration_seconds=round(duration, 3),
        training_data_size=float(prepared.rows),
        train_rows=float(len(d.y_train)),
        validation_rows=float(len(d.y_valid)),
    )
    if model.best_iteration:
        scores["best_iteration"] = float(model.best_iteration)
    scores = {k: v for k, v in scores.items() if not (isinstance(v, float) and math.isnan(v))}
    reporter.metrics(scores)
    reporter.log(
        "INFO",
        "evaluation: MAE {mae:.3f}, RMSE {rmse:.3f}, MAPE {mape:.2f}%, R2 {r2_score:.4f}".format(**{"mape": float("nan"), **scores}),
    )

    reporter.step("registration", STEP_START["registration"])
    folder = registry.artifact_dir()
    artifact = model.save(folder)
    version = registry.register(artifact, spec, scores)
    reporter.log("INFO", f"registration: model version {version} saved to {artifact}")
    return Result(scores, version, artifact)
