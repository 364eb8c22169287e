"""The five steps: data_loading, preprocessing, training, evaluation, registration.

Each step reports its progress and log lines through a :class:`trainers.ports.Reporter`;
the data comes from a :class:`trainers.ports.DataSource` and the model goes to a
:class:`trainers.ports.ModelRegistry`; a hyperparameter search runs through a
:class:`trainers.ports.Tuner`. So the pipeline knows nothing of gRPC, SQL or Ray.
Preparation is in trainers/preparation.py, evaluation in trainers/evaluation.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trainers import algorithms, distributed, intervals, metrics, predictions, quality, shards
from trainers.algorithms.base import Task
from trainers.errors import ConfigValidationError, TrainingError, Violation, no_rows_in_window
from trainers.evaluation import backtest, evaluate, forecast_report, horizon_scores
from trainers.ports import STEP_START, DataSource, Distributor, Gang, Level, ModelRegistry, Reporter, Tracker, Tuner
from trainers.preparation import MIN_ROWS, Prepared, prepare, too_few_rows, too_short, wants_tune
from trainers.spec import TrainingSpec, WorkerRequest
from trainers.tuning import TrialResult, TrialSetup, best_of, fold_sizes, trial_options, whole_range


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


LIVE_EVERY_SECONDS = 1.0  # at most one write of live metrics per second


class _LiveMetrics:
    """Live training metrics (FitOptions.on_metrics), written at most once per
    LIVE_EVERY_SECONDS: the guide's ``mae`` and ``rmse`` (its RUNNING example shows them),
    the same under names that say what they are, ``live_<part>_mae`` / ``live_<part>_rmse``
    (<part>: ``tune``, the held-out tune part, or ``fit``, the rows being fitted when there is
    no tune part), and ``live_round`` (the round or epoch), present only while the metrics are
    live. The evaluation's metrics replace them all."""

    clock = staticmethod(time.monotonic)

    def __init__(self, reporter: Reporter, part: str, tracker: Tracker | None = None) -> None:
        self.reporter, self.part, self.last = reporter, part, float("-inf")
        self.tracker = tracker  # told every round's metrics (an experiment tracker)

    def __call__(self, iteration: int, measure: Callable[[], Mapping[str, float]]) -> None:
        now = self.clock()
        due = now - self.last >= LIVE_EVERY_SECONDS
        if not due and self.tracker is None:
            return
        finite = {k: float(v) for k, v in measure().items() if math.isfinite(v)}
        named = {f"live_{self.part}_{k}": v for k, v in finite.items()}
        if self.tracker is not None:
            self.tracker.round(iteration, named)
        if due:
            self.last = now
            self.reporter.metrics({**finite, **named, "live_round": float(iteration)})


def run(
    spec: TrainingSpec,
    *,
    data: DataSource,
    reporter: Reporter,
    registry: ModelRegistry,
    num_threads: int = 1,
    tuner: Tuner | None = None,
    distributor: Distributor | None = None,
    tracker: Tracker | None = None,
) -> Result:
    """The five steps. A spec with ``tuning`` needs a ``tuner``; the model is then trained,
    evaluated and registered with the winning hyperparameters. A distributed spec
    (``workers``) needs a ``distributor``, which trains the model on its workers. A
    ``tracker`` is told the training metrics of every round."""
    if spec.workers and distributor is not None and distributor.prepares_shards:
        if not (why := shards.unsupported(spec)):
            return _run_sharded(spec, data, reporter, registry, distributor, tracker)
        reporter.log(Level.INFO, f"distributed: the attempt reads and prepares the whole window ({why}); the workers get shards of it")
    frame, checked = _load(spec, data, reporter)
    prepared = _preprocess(frame, spec, reporter)
    trained = _train(prepared, spec, reporter, num_threads, tuner, distributor, tracker)
    scores, kept = _evaluate(trained, prepared, trained.spec, reporter, checked)
    importance = _importance(trained.model, prepared.inputs, reporter)
    return _register(trained.model, trained.spec, scores, importance, registry, reporter, kept)


def _load(spec: TrainingSpec, data: DataSource, reporter: Reporter) -> tuple[pd.DataFrame, dict[str, float]]:
    reporter.step("data_loading", STEP_START["data_loading"])
    columns = spec.table_columns()
    window = f"{spec.training_start:%Y-%m-%d %H:%M} .. {spec.training_end:%Y-%m-%d %H:%M} UTC"
    reporter.log(Level.INFO, f"loading {', '.join(columns)} from features.{spec.feature_table} for {window}")
    frame = data.load(spec.feature_table, columns, spec.training_start, spec.training_end)
    if frame.empty:
        raise _no_rows(spec)
    reporter.log(Level.INFO, f"data_loading: {len(frame)} rows loaded")
    return quality.check(frame, spec, reporter)


def _preprocess(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> Prepared:
    reporter.step("preprocessing", STEP_START["preprocessing"])
    prepared = prepare(frame, spec, reporter)
    d = prepared.data
    tune = f", {len(d.y_tune)} tune rows" if len(d.y_tune) else ""
    reporter.log(
        Level.INFO,
        f"preprocessing: {prepared.task} on {len(prepared.inputs)} inputs; {len(d.y_train)} training rows{tune}, "
        f"{len(d.y_valid)} validation rows (split at {prepared.split_at:%Y-%m-%d %H:%M})",
    )
    return prepared


@dataclass(frozen=True)
class _Trained:
    model: algorithms.FittedModel
    duration: float
    options: algorithms.FitOptions
    spec: TrainingSpec  # what trained the model: the job's spec, with the winning hyperparameters of a search
    search: Mapping[str, float]  # tuning_trials, tuning_best_score; empty without a search


def _search(
    prepared: Prepared, spec: TrainingSpec, options: algorithms.FitOptions, reporter: Reporter, tuner: Tuner | None
) -> tuple[TrainingSpec, dict[str, float], bool]:
    """Run the hyperparameter search; the spec with the winning hyperparameters (and, for an
    algorithm that stops early, the rounds the winner's folds chose), the search's metrics,
    and whether the final model trains on the whole training range."""
    tuning = spec.tuning
    if tuning is None:
        return spec, {}, False
    if tuner is None:
        raise ConfigValidationError([Violation("tuning", "this runner has no tuner (Ray Tune): run the job on the service")])
    algorithm = algorithms.get(spec.algorithm)
    setup = TrialSetup.of(spec.algorithm, spec.hyperparameters, prepared.data, options, tuning)
    sizes = fold_sizes(setup.data, tuning.folds)
    space = ", ".join(f"{name} {dim.kind}" for name, dim in (tuning.search_space or {}).items())
    sampler = "Optuna's TPE" if tuning.sampler == "tpe" else "random sampling"
    slices = " + ".join(map(str, sizes))
    stop = trial_options(setup).early_stopping_rounds
    reporter.log(
        Level.INFO,
        f"tuning: {tuning.num_trials} trials by {sampler}, {tuning.max_concurrent_trials} at a time, over {space}; "
        f"each scored by {tuning.metric} on {len(sizes)} rolling-origin fold(s) of {slices} tune rows, "
        f"the last ending where validation starts" + (f"; each fold stops after {stop} rounds without a better score" if stop else ""),
    )
    if len(sizes) < tuning.folds:
        reporter.log(Level.WARNING, f"tuning: the training range holds {len(sizes)} of the {tuning.folds} folds asked for")
    done = 0

    def on_trial(trial: TrialResult) -> None:
        nonlocal done
        done += 1
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(trial.params.items()))
        outcome = f"{tuning.metric} {trial.score:.4f}" if trial.score is not None else trial.status
        rounds = f" at {trial.rounds} rounds" if trial.rounds else ""
        reporter.log(Level.INFO, f"tuning: trial {trial.number} ({done}/{tuning.num_trials}): {params} -> {outcome}{rounds}")
        reporter.progress(STEP_START["training"] + int(40 * done / tuning.num_trials))

    results = tuner.search(setup, on_trial)
    try:
        best = best_of(results, tuning)
    except ValueError:
        raise TrainingError(f"tuning: none of the {len(results)} trials completed") from None
    winning = {**spec.hyperparameters, **best.params}
    # The final model trains on the whole training range, for the winner's rounds. With
    # quantiles the tune part stays held out: the intervals are calibrated on it.
    whole = not spec.quantiles and not spec.workers
    if whole and best.rounds and algorithm.rounds_param:
        winning[algorithm.rounds_param] = best.rounds
    how = (
        f"training on the whole training range{f' for {best.rounds} rounds (the mean of its folds best)' if best.rounds else ''}"
        if whole
        else "training on the fit part, the tune part kept for " + ("the quantiles' calibration" if spec.quantiles else "the workers")
    )
    reporter.log(
        Level.INFO,
        f"tuning: best trial {best.number}, {tuning.metric} {best.score:.4f} over its folds; {how}, with {winning}",
    )
    search = {"tuning_trials": float(len(results)), "tuning_best_score": float(best.score or 0.0)}
    return spec.replace(hyperparameters=winning), search, whole


def _train(
    prepared: Prepared,
    spec: TrainingSpec,
    reporter: Reporter,
    num_threads: int,
    tuner: Tuner | None = None,
    distributor: Distributor | None = None,
    tracker: Tracker | None = None,
) -> _Trained:
    reporter.step("training", STEP_START["training"])
    algorithm = algorithms.get(spec.algorithm)
    if spec.workers:
        if distributor is None:
            raise ConfigValidationError([Violation("distributed", "this runner cannot start workers (Ray): run the job on the service")])
        num_threads = max(1, int(spec.workers.cpus))
    options = _options(spec, prepared.task, num_threads, reporter, tracker, tuned=bool(len(prepared.data.y_tune)))
    spec, search, whole = _search(prepared, spec, options, reporter, tuner)
    data = prepared.data
    if whole:  # no tune part left to stop on: the winner's rounds are fixed
        data = whole_range(prepared.data)
        options = dataclasses.replace(options, early_stopping_rounds=None, on_metrics=_LiveMetrics(reporter, "fit", tracker))
    reporter.log(
        Level.INFO, f"training: {spec.algorithm} with {dict(spec.hyperparameters) or 'default hyperparameters'}, seed {spec.random_seed}"
    )
    importlib.import_module(algorithm.library)  # a first import is not training time
    started = time.perf_counter()
    if spec.workers and distributor is not None:
        model = _fit_distributed(prepared, spec, options, reporter, distributor)
    else:
        model = algorithm.fit(data, spec.hyperparameters, options)
    duration = time.perf_counter() - started
    note = f", best iteration {model.best_iteration}" if model.best_iteration else ""
    if spec.use_gpu and not algorithm.supports_gpu:
        gpu_ones = " and ".join(algorithms.with_trait("supports_gpu"))
        reporter.log(Level.WARNING, f"use_gpu applies to {gpu_ones}; {spec.algorithm} trained on the CPU")
    elif spec.use_gpu and not spec.workers and getattr(model, "device", None) != "cuda":  # a distributor says so itself
        reporter.log(Level.WARNING, "use_gpu was asked for but this node has no GPU: trained on the CPU")
    reporter.log(Level.INFO, f"training: done in {duration:.2f} s{note}")
    return _Trained(model, duration, options, spec, search)


def _options(
    spec: TrainingSpec, task: Task, num_threads: int, reporter: Reporter, tracker: Tracker | None, *, tuned: bool
) -> algorithms.FitOptions:
    """The training's options; ``tuned``: there is a tune part (live metrics watch it)."""
    return algorithms.FitOptions(
        task=task,
        seed=spec.random_seed,
        early_stopping_rounds=spec.early_stopping_rounds,
        num_threads=num_threads,
        batch_size=spec.batch_size,
        use_gpu=spec.use_gpu,
        on_iteration=_IterationReporter(reporter),
        eval_metric=spec.tuning.metric if spec.tuning else None,  # the final model watches what its trials did
        on_metrics=_LiveMetrics(reporter, "tune" if tuned else "fit", tracker),
    )


def _fit_distributed(
    prepared: Prepared, spec: TrainingSpec, options: algorithms.FitOptions, reporter: Reporter, distributor: Distributor
) -> algorithms.FittedModel:
    workers = spec.workers
    if workers is None:
        raise ValueError("not a distributed spec")
    try:
        plan, shards = distributed.plan(spec.algorithm, spec.hyperparameters, prepared.data, options, workers.workers)
    except ValueError as exc:
        raise ConfigValidationError([Violation("ray_config.num_workers", str(exc))]) from None
    sizes = ", ".join(str(n) for n in plan.shard_rows[:8]) + (", ..." if workers.workers > 8 else "")
    reporter.log(
        Level.INFO,
        f"training: data-parallel over {workers.describe()} ({algorithms.get(spec.algorithm).data_parallel}); "
        f"shards of {sizes} rows, each worker also scores the {len(plan.y_tune)} tune rows",
    )
    return distributor.fit(plan, shards, reporter, options.on_iteration)


def _run_sharded(
    spec: TrainingSpec, data: DataSource, reporter: Reporter, registry: ModelRegistry, distributor: Distributor, tracker: Tracker | None
) -> Result:
    """The five steps of a distributed job whose workers read and prepare their own shards
    (trainers/shards.py); this process only coordinates them."""
    workers = spec.workers
    if workers is None:
        raise ValueError("not a distributed spec")
    reporter.step("data_loading", STEP_START["data_loading"])
    reads = _cut(spec, data, reporter, workers.workers)
    with distributor.gang(spec, reads, reporter) as gang:
        loaded, checked = _load_shards(gang, spec, reporter, len(reads))
        reporter.step("preprocessing", STEP_START["preprocessing"])
        ready = _prepare_shards(gang, reads, loaded, spec, reporter)
        reporter.step("training", STEP_START["training"])
        trained = _train_shards(gang, ready, spec, workers, reporter, tracker)
        reporter.step("evaluation", STEP_START["evaluation"])
        scored = shards.joined(gang.each("score", [(trained.model,)] * len(reads)))
    scores = forecast_report(scored.sums, reporter)
    kept = predictions.build(
        pd.Series(pd.to_datetime(scored.stamps, utc=True)), scored.actual, kind=predictions.FORECAST, predicted=scored.predicted,
        baselines=scored.baselines, series=pd.Series(scored.series) if ready.series > 1 else None,
        baseline=metrics.best_baseline_name(scores), total_rows=scored.rows,
    )  # fmt: skip
    fit, tuned, valid = ready.sizes
    scores = _final(scores, trained, (fit + tuned + valid, fit, valid), checked, reporter)
    importance = _importance(trained.model, ready.inputs, reporter)
    return _register(trained.model, spec, scores, importance, registry, reporter, kept)


def _no_rows(spec: TrainingSpec) -> TrainingError:
    table = f"features.{spec.feature_table}"
    return no_rows_in_window(spec.feature_table, spec.training_start, spec.training_end, reason=f"No rows in window: {table}", table=table)


def _cut(spec: TrainingSpec, data: DataSource, reporter: Reporter, workers: int) -> list[shards.ShardRead]:
    outline = data.outline(spec.feature_table, spec.training_start, spec.training_end)
    if not outline:
        raise _no_rows(spec)
    try:
        reads = shards.cut(outline, spec, workers)
    except ValueError as exc:
        raise ConfigValidationError([Violation("ray_config.num_workers", str(exc))]) from None
    how = f"by series ({len(outline)} series)" if reads[0].series is not None else "by time"
    window = f"{spec.training_start:%Y-%m-%d %H:%M} .. {spec.training_end:%Y-%m-%d %H:%M} UTC"
    reporter.log(
        Level.INFO,
        f"loading {', '.join(spec.table_columns())} from features.{spec.feature_table} for {window}: each of {workers} workers "
        f"reads its own shard, {how}: " + "; ".join(r.describe() for r in reads[:8]),
    )
    return reads


def _load_shards(gang: Gang, spec: TrainingSpec, reporter: Reporter, n: int) -> tuple[list[shards.Loaded], dict[str, float]]:
    loaded: list[shards.Loaded] = gang.each("load", [()] * n)
    rows = [sum(c.rows for c in part.checks) for part in loaded]
    if not sum(rows):
        raise _no_rows(spec)
    reporter.log(Level.INFO, f"data_loading: {sum(rows)} rows loaded by the workers ({', '.join(map(str, rows))})")
    return loaded, quality.judge([c for part in loaded for c in part.checks], spec, reporter)


@dataclass(frozen=True)
class _Ready:
    """The shards, prepared: what the attempt knows of them."""

    inputs: tuple[str, ...]
    parts: Sequence[shards.Parts]
    series: int
    sizes: tuple[int, int, int]  # fit, tune and validation rows


def _prepare_shards(
    gang: Gang, reads: Sequence[shards.ShardRead], loaded: Sequence[shards.Loaded], spec: TrainingSpec, reporter: Reporter
) -> _Ready:
    n = len(loaded)
    complete = sum(part.complete for part in loaded)
    if dropped := sum(part.rows for part in loaded) - complete:
        reporter.log(Level.INFO, f"dropped {dropped} of {complete + dropped} rows with missing values")
    if complete < MIN_ROWS:
        raise too_few_rows(complete, spec)
    cut_at, split_at = shards.cuts(loaded, spec)
    counts: list[list[dict[str, int]]] = gang.each("split", [(cut_at,)] * n)
    if sum(sum(c.values()) for spans in counts for c in spans) in (0, complete):
        first = min(a for part in loaded for a, _ in part.spans.values())
        last = max(b for part in loaded for _, b in part.spans.values())
        raise too_short(first, last, spec)
    if len(cut_at) > 1:
        reporter.log(Level.INFO, f"preprocessing: {len(cut_at)} series; lags, splits and baselines within each")
    offsets, sizes = shards.tune_offsets(reads, counts)
    tune = wants_tune(spec, algorithms.REGRESSION)
    parts: list[shards.Parts] = gang.each("parts", [(offsets[r], sizes, tune) for r in range(n)])
    fit, tuned, valid = sum(p.fit for p in parts), sum(len(p.tune_y) for p in parts), sum(p.valid for p in parts)
    if empty := [r for r, p in enumerate(parts) if not p.fit]:
        raise ConfigValidationError(
            [
                Violation(
                    "ray_config.num_workers",
                    f"worker {empty[0]}'s share of the window has no training rows (a gap in the data): use fewer workers",
                )
            ]
        )
    if spec.use_sample is not None and spec.use_sample < 1.0:
        reporter.log(Level.INFO, f"use_sample={spec.use_sample}: training on {fit} sampled rows, drawn by each worker from its shard")
    inputs = next(part.inputs for part in loaded if part.inputs)
    reporter.log(
        Level.INFO,
        f"preprocessing: {algorithms.REGRESSION} on {len(inputs)} inputs; {fit} training rows"
        + (f", {tuned} tune rows" if tuned else "")
        + f", {valid} validation rows (split at {split_at:%Y-%m-%d %H:%M}), prepared by the workers",
    )
    return _Ready(inputs, parts, len(cut_at), (fit, tuned, valid))


def _train_shards(
    gang: Gang, ready: _Ready, spec: TrainingSpec, workers: WorkerRequest, reporter: Reporter, tracker: Tracker | None
) -> _Trained:
    algorithm = algorithms.get(spec.algorithm)
    tuned = ready.sizes[1]
    options = _options(spec, algorithms.REGRESSION, max(1, int(workers.cpus)), reporter, tracker, tuned=bool(tuned))
    samples = None
    if algorithm.bin_sample:
        samples = gang.each("bin_sample", [(k,) for k in shards.bin_shares(ready.parts, algorithm.bin_sample)])
    plan = shards.plan(spec, options, ready.inputs, ready.parts, samples)
    own = ", ".join(str(p.fit) for p in ready.parts[:8])
    reporter.log(
        Level.INFO, f"training: {spec.algorithm} with {dict(spec.hyperparameters) or 'default hyperparameters'}, seed {spec.random_seed}"
    )
    reporter.log(
        Level.INFO,
        f"training: data-parallel over {workers.describe()} ({algorithm.data_parallel}); each worker on the rows it prepared "
        f"({own}), each also scores the {tuned} tune rows",
    )
    importlib.import_module(algorithm.library)
    started = time.perf_counter()
    model = gang.fit(plan, reporter, options.on_iteration)
    duration = time.perf_counter() - started
    note = f", best iteration {model.best_iteration}" if model.best_iteration else ""
    reporter.log(Level.INFO, f"training: done in {duration:.2f} s{note}")
    return _Trained(model, duration, options, spec, {})


def _evaluate(
    trained: _Trained, prepared: Prepared, spec: TrainingSpec, reporter: Reporter, checked: Mapping[str, float]
) -> tuple[dict[str, float], predictions.Predictions]:
    reporter.step("evaluation", STEP_START["evaluation"])
    model, d = trained.model, prepared.data
    scores, kept = evaluate(model, prepared, spec, reporter)
    if spec.backtest:
        scores.update(backtest(prepared, spec, trained.options, reporter))
    if spec.horizons:
        scores.update(horizon_scores(scores, prepared, spec, trained.options, reporter))
    sizes = (prepared.rows, len(d.y_train), len(d.y_valid))
    return _final(scores, trained, sizes, checked, reporter), kept


def _final(
    scores: dict[str, float], trained: _Trained, sizes: tuple[int, int, int], checked: Mapping[str, float], reporter: Reporter
) -> dict[str, float]:
    """The evaluation's metrics with the run's sizes (rows, train rows, validation rows),
    duration, search and data checks, written as the job's final metrics."""
    rows, train_rows, validation_rows = sizes
    scores.update(
        training_duration_seconds=round(trained.duration, 3),
        training_data_size=float(rows),
        train_rows=float(train_rows),
        validation_rows=float(validation_rows),
    )
    if trained.model.best_iteration:
        scores["best_iteration"] = float(trained.model.best_iteration)
    scores.update(trained.search)
    scores.update(checked)  # the data checks' counts: with the metrics, and in the registry
    scores = {k: float(v) for k, v in scores.items() if not (isinstance(v, float) and math.isnan(v))}
    reporter.metrics(scores, final=True)
    reporter.log(Level.INFO, "evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k in metrics.HEADLINE))
    return scores


def _importance(model: algorithms.FittedModel, inputs: tuple[str, ...], reporter: Reporter) -> dict[str, float]:
    importance = model.importance(inputs)
    if importance:
        top = sorted(importance.items(), key=lambda kv: -kv[1])[:5]
        reporter.log(Level.INFO, "feature importance (gain share): " + ", ".join(f"{k} {v:.1%}" for k, v in top))
    return importance


def _register(
    model: algorithms.FittedModel,
    spec: TrainingSpec,
    scores: Mapping[str, float],
    importance: Mapping[str, float],
    registry: ModelRegistry,
    reporter: Reporter,
    kept: predictions.Predictions,
) -> Result:
    reporter.step("registration", STEP_START["registration"])
    folder = registry.artifact_dir()
    artifact = model.save(folder)
    predictions.write(kept, folder)
    if "intervals" in kept.extra:  # the quantile offsets, for forecasts from the version
        (folder / intervals.FILE_NAME).write_text(kept.extra["intervals"])
    bound = f" (the newest {len(kept.frame)} of {kept.total_rows})" if kept.truncated else ""
    reporter.log(Level.INFO, f"registration: {len(kept.frame)} validation predictions kept for plots{bound}")
    version = registry.register(artifact, spec, scores, importance)
    reporter.log(Level.INFO, f"registration: model version {version} saved to {artifact}")
    return Result(scores, version, artifact, importance)
