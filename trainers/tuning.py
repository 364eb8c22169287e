"""What one trial of a hyperparameter search is, independent of who runs the search: with the
trial's hyperparameters, fit and score on each rolling-origin fold of the training range
(:func:`folds`: the tune part, then as many slices of its length before it, each fitted on
the rows before it) and average the scores. The validation part is not in a trial's data at
all, so the search can never choose on it. The search itself (Ray Tune on the cluster) is a
port: trainers.ports.Tuner.

Algorithms that stop early (Algorithm.early_stopping) stop within every fold, after the
job's ``early_stopping_rounds`` or TRIAL_EARLY_STOPPING rounds without a better tune score,
and the trial records the mean of the folds' best rounds: the final model trains that many
rounds on the whole training range (:func:`whole_range`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers import algorithms, metrics
from trainers.algorithms import FitOptions, TrainData
from trainers.evaluation import predict_after
from trainers.spec.tuning import Tuning

TRIAL_EARLY_STOPPING = 50  # rounds without a better tune score that end a fold's fit, when the job sets none


def _ignore(done: int, total: int) -> None:
    """Trials do not move the job's progress bar (the search reports per trial)."""


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs, shipped once to every trial (Ray's object store): the
    algorithm, the fixed hyperparameters, the fit and tune parts, and the fit options."""

    algorithm: str
    fixed: Mapping[str, Any]
    data: TrainData  # fit and tune parts only; the validation arrays are empty
    options: FitOptions
    tuning: Tuning

    @classmethod
    def of(cls, algorithm: str, fixed: Mapping[str, Any], data: TrainData, options: FitOptions, tuning: Tuning) -> TrialSetup:
        width = data.x_train.shape[1]
        blind = dataclasses.replace(data, x_valid=np.empty((0, width)), y_valid=np.empty(0))
        return cls(
            algorithm, dict(fixed), blind, dataclasses.replace(options, on_iteration=_ignore, on_score=None, on_metrics=None), tuning
        )


@dataclass(frozen=True)
class TrialResult:
    number: int
    params: Mapping[str, Any]
    score: float | None  # None: stopped early, or failed
    status: str  # completed, stopped or failed
    rounds: int | None = None  # the mean best round over the folds, for an algorithm that stops early


@dataclass(frozen=True)
class Scored:
    """A trial's outcome: the mean of its folds' scores, each fold's score, and the mean best
    round (None: the algorithm does not stop early)."""

    score: float
    fold_scores: tuple[float, ...]
    rounds: int | None


def _tune_sizes(data: TrainData) -> Mapping[Any, int] | int:
    """How long each fold's tune slice is: the tune part's length, per series when several."""
    if data.tune_groups is None:
        return len(data.y_tune)
    values, counts = np.unique(data.tune_groups, return_counts=True)
    return {v: int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}


def _slice(n: int, groups: np.ndarray | None, sizes: Mapping[Any, int] | int) -> np.ndarray | None:
    """Over ``n`` fit rows (of ``groups``' series), the mask of the next earlier fold's tune
    slice: the last ``sizes`` rows (per series). None when too few would be left to fit on
    (less than twice the slice)."""
    slice_ = np.zeros(n, dtype=bool)
    if groups is None:
        size = int(sizes) if isinstance(sizes, int) else 0
        if size < 1 or n - size < 2 * size:
            return None
        slice_[n - size :] = True
        return slice_
    for group, size in sizes.items() if isinstance(sizes, Mapping) else ():
        rows = np.flatnonzero(groups == group)  # in time order within its series
        if len(rows) - size < 2 * size:
            return None
        slice_[rows[len(rows) - size :]] = True
    return slice_


def _slices(data: TrainData, count: int) -> Iterator[np.ndarray]:
    """The tune-slice masks of the folds after the first, each over the fit rows of the fold
    before it (nearer validation). Only the row counts and series are walked, no data."""
    sizes = _tune_sizes(data)
    n, groups = len(data.y_train), data.train_groups
    for _ in range(count - 1):
        mask = _slice(n, groups, sizes)
        if mask is None:
            return
        yield mask
        keep = ~mask
        n, groups = int(keep.sum()), None if groups is None else groups[keep]


def _earlier(part: TrainData, slice_: np.ndarray) -> TrainData:
    """The fold whose tune slice is ``slice_`` of ``part``'s fit rows, fitted on the rest."""
    keep = ~slice_
    return dataclasses.replace(
        part,
        x_train=part.x_train[keep],
        y_train=part.y_train[keep],
        x_tune=part.x_train[slice_],
        y_tune=part.y_train[slice_],
        train_groups=None if part.train_groups is None else part.train_groups[keep],
        tune_groups=None if part.train_groups is None else part.train_groups[slice_],
    )


def folds(data: TrainData, count: int) -> Iterator[TrainData]:
    """The rolling-origin folds, nearest validation first: the fit and tune parts, then up to
    ``count - 1`` folds each ending where the one after it starts, with tune slices as long
    as the tune part (per series). Fewer when the training range is too short for them. Made
    one at a time, so a trial holds one fold's copy of the rows, not all of them."""
    part = data
    yield part
    for slice_ in _slices(data, count):
        part = _earlier(part, slice_)
        yield part


def fold_sizes(data: TrainData, count: int) -> list[int]:
    """The tune rows of each fold :func:`folds` makes, without making them."""
    return [len(data.y_tune), *(int(mask.sum()) for mask in _slices(data, count))]


def trial_options(setup: TrialSetup) -> FitOptions:
    """A trial's fit options: the search's metric, and early stopping for an algorithm that
    can (the job's rounds, else TRIAL_EARLY_STOPPING)."""
    algorithm = algorithms.get(setup.algorithm)
    stop = setup.options.early_stopping_rounds or (TRIAL_EARLY_STOPPING if algorithm.early_stopping else None)
    return dataclasses.replace(setup.options, eval_metric=setup.tuning.metric, early_stopping_rounds=stop)


def run_trial(setup: TrialSetup, params: Mapping[str, Any], report: Callable[[int, float], None] | None = None) -> Scored:
    """Train with ``params`` on each fold and score its tune slice by ``setup.tuning.metric``;
    the mean decides. ``report(round, score)`` hears the nearest fold's tune score as boosted
    trees train, so that a scheduler may stop a trial that falls behind."""
    algorithm = algorithms.get(setup.algorithm)
    options = trial_options(setup)
    scores: list[float] = []
    best: list[int | None] = []
    for k, part in enumerate(folds(setup.data, setup.tuning.folds)):
        model = algorithm.fit(part, {**setup.fixed, **params}, dataclasses.replace(options, on_score=report if k == 0 else None))
        pred = predict_after(model, part.x_train, part.x_tune)
        scores.append(float(metrics.regression(part.y_tune, pred)[setup.tuning.metric]))
        best.append(model.best_iteration)
    rounds = None
    if algorithm.rounds_param and options.early_stopping_rounds and all(b for b in best):
        rounds = max(1, round(float(np.mean([b or 0 for b in best]))))
    return Scored(float(np.mean(scores)), tuple(scores), rounds)


def whole_range(data: TrainData) -> TrainData:
    """The fit and tune parts as one fit part (per series in time order), with no tune part:
    what the final model of a search trains on."""
    if not len(data.y_tune):
        return data
    x = np.concatenate([data.x_train, data.x_tune])
    y = np.concatenate([data.y_train, data.y_tune])
    groups = None
    if data.train_groups is not None and data.tune_groups is not None:
        groups = np.concatenate([data.train_groups, data.tune_groups])
        order = np.argsort(groups, kind="stable")  # series by series, each in time order
        x, y, groups = x[order], y[order], groups[order]
    width = x.shape[1]
    return dataclasses.replace(
        data, x_train=x, y_train=y, x_tune=np.empty((0, width)), y_tune=np.empty(0), train_groups=groups, tune_groups=None
    )


def best_of(results: list[TrialResult], tuning: Tuning) -> TrialResult:
    """The winning trial (ValueError when none completed)."""
    done = [r for r in results if r.score is not None and np.isfinite(r.score)]
    if not done:
        raise ValueError("no trial completed")
    return (min if tuning.mode == "min" else max)(done, key=lambda r: float(r.score or 0.0))
