"""The five steps: data_loading, preprocessing, training, evaluation, registration.

Each step reports its progress and log lines through a :class:`trainers.ports.Reporter`;
the data comes from a :class:`trainers.ports.DataSource` and the model goes to a
:class:`trainers.ports.ModelRegistry`, so the pipeline knows nothing of gRPC, SQL or Ray.
Preparation is in trainers/preparation.py, evaluation in trainers/evaluation.py.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trainers import algorithms, metrics
from trainers.errors import no_rows_in_window
from trainers.evaluation import backtest, evaluate
from trainers.ports import STEP_START, DataSource, ModelRegistry, Reporter
from trainers.preparation import Prepared, prepare
from trainers.spec import TrainingSpec


@dataclass(frozen=True)
class Result:
    metrics: Mapping[str, float]
    model_version: int
    artifact: Path
    importance: Mapping[str, float]


class _IterationReporter:
    """Turns boosting rounds (or epochs) into progress 20..80, at most every 0.25 s."""

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
    frame = _load(spec, data, reporter)
    prepared = _preprocess(frame, spec, reporter)
    trained = _train(prepared, spec, reporter, num_threads)
    scores = _evaluate(trained, prepared, spec, reporter)
    importance = _importance(trained.model, prepared, reporter)
    return _register(trained.model, spec, scores, importance, registry, reporter)


def _load(spec: TrainingSpec, data: DataSource, reporter: Reporter) -> pd.DataFrame:
    reporter.step("data_loading", STEP_START["data_loading"])
    columns = spec.table_columns()
    window = f"{spec.training_start:%Y-%m-%d %H:%M} .. {spec.training_end:%Y-%m-%d %H:%M} UTC"
    reporter.log("INFO", f"loading {', '.join(columns)} from features.{spec.feature_table} for {window}")
    frame = data.load(spec.feature_table, columns, spec.training_start, spec.training_end)
    if frame.empty:
        table = f"features.{spec.feature_table}"
        raise no_rows_in_window(
            spec.feature_table, spec.training_start, spec.training_end, reason=f"No rows in window: {table}", table=table
        )
    reporter.log("INFO", f"data_loading: {len(frame)} rows loaded")
    return frame


def _preprocess(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> Prepared:
    reporter.step("preprocessing", STEP_START["preprocessing"])
    prepared = prepare(frame, spec, reporter)
    d = prepared.data
    tune = f", {len(d.y_tune)} tune rows" if len(d.y_tune) else ""
    reporter.log(
        "INFO",
        f"preprocessing: {prepared.task} on {len(prepared.inputs)} inputs; {len(d.y_train)} training rows{tune}, "
        f"{len(d.y_valid)} validation rows (split at {prepared.split_at:%Y-%m-%d %H:%M})",
    )
    return prepared


@dataclass(frozen=True)
class _Trained:
    model: algorithms.FittedModel
    duration: float
    options: algorithms.FitOptions


def _train(prepared: Prepared, spec: TrainingSpec, reporter: Reporter, num_threads: int) -> _Trained:
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
    model = algorithm.fit(prepared.data, spec.hyperparameters, options)
    duration = time.perf_counter() - started
    note = f", best iteration {model.best_iteration}" if model.best_iteration else ""
    if spec.use_gpu and not algorithm.supports_gpu:
        gpu_ones = " and ".join(algorithms.with_trait("supports_gpu"))
        reporter.log("WARNING", f"use_gpu applies to {gpu_ones}; {spec.algorithm} trained on the CPU")
    elif spec.use_gpu and getattr(model, "device", None) != "cuda":
        reporter.log("WARNING", "use_gpu was asked for but this node has no GPU: trained on the CPU")
    reporter.log("INFO", f"training: done in {duration:.2f} s{note}")
    return _Trained(model, duration, options)


def _evaluate(trained: _Trained, prepared: Prepared, spec: TrainingSpec, reporter: Reporter) -> dict[str, float]:
    reporter.step("evaluation", STEP_START["evaluation"])
    model, d = trained.model, prepared.data
    scores = evaluate(model, prepared, spec, reporter)
    if spec.backtest:
        scores.update(backtest(prepared, spec, trained.options, reporter))
    scores.update(
        training_duration_seconds=round(trained.duration, 3),
        training_data_size=float(prepared.rows),
        train_rows=float(len(d.y_train)),
        validation_rows=float(len(d.y_valid)),
    )
    if model.best_iteration:
        scores["best_iteration"] = float(model.best_iteration)
    scores = {k: float(v) for k, v in scores.items() if not (isinstance(v, float) and math.isnan(v))}
    reporter.metrics(scores)
    reporter.log("INFO", "evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k in metrics.HEADLINE))
    return scores


def _importance(model: algorithms.FittedModel, prepared: Prepared, reporter: Reporter) -> dict[str, float]:
    importance = model.importance(prepared.inputs)
    if importance:
        top = sorted(importance.items(), key=lambda kv: -kv[1])[:5]
        reporter.log("INFO", "feature importance (gain share): " + ", ".join(f"{k} {v:.1%}" for k, v in top))
    return importance


def _register(
    model: algorithms.FittedModel,
    spec: TrainingSpec,
    scores: Mapping[str, float],
    importance: Mapping[str, float],
    registry: ModelRegistry,
    reporter: Reporter,
) -> Result:
    reporter.step("registration", STEP_START["registration"])
    folder = registry.artifact_dir()
    artifact = model.save(folder)
    version = registry.register(artifact, spec, scores, importance)
    reporter.log("INFO", f"registration: model version {version} saved to {artifact}")
    return Result(scores, version, artifact, importance)
