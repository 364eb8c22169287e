"""What one trial of a hyperparameter search is, independent of who runs the search: fit on
the fit part of the training range with the trial's hyperparameters, score on the tune part.
The validation part is not in a trial's data at all, so the search can never choose on it.
The search itself (Ray Tune on the cluster) is a port: trainers.ports.Tuner."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers import algorithms, metrics
from trainers.algorithms import FitOptions, TrainData
from trainers.evaluation import predict_after
from trainers.spec.tuning import Tuning


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


def run_trial(setup: TrialSetup, params: Mapping[str, Any], report: Callable[[int, float], None] | None = None) -> float:
    """Train with ``params`` on the fit part and return the tune part's score
    (``setup.tuning.metric``). ``report(round, score)`` hears the tune score as boosted
    trees train, so that a scheduler may stop a trial that falls behind."""
    algorithm = algorithms.get(setup.algorithm)
    options = dataclasses.replace(setup.options, eval_metric=setup.tuning.metric, on_score=report)
    model = algorithm.fit(setup.data, {**setup.fixed, **params}, options)
    pred = predict_after(model, setup.data.x_train, setup.data.x_tune)
    return metrics.regression(setup.data.y_tune, pred)[setup.tuning.metric]


def best_of(results: list[TrialResult], tuning: Tuning) -> TrialResult:
    """The winning trial (ValueError when none completed)."""
    done = [r for r in results if r.score is not None and np.isfinite(r.score)]
    if not done:
        raise ValueError("no trial completed")
    return (min if tuning.mode == "min" else max)(done, key=lambda r: float(r.score or 0.0))
