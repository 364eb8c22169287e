"""Data-parallel training, independent of who runs the workers: how the fit part is cut
into one shard per worker, what every worker gets besides its shard, and what one worker
does. Who starts the workers, moves the shards and joins the result is a port:
trainers.ports.Distributor (a gang of Ray actors on the cluster: server/execution/distributed.py).

Shards are as equal as the rows allow. For a model of single rows every worker takes
every n-th row, so each shard spans the whole time range (contiguous shards would give
each worker a season, and bins or trees fitted to it); for a model of windows (lstm) they
are contiguous runs of the fit part (rows are in series, then time order), so a window of
context never crosses a shard. A histogram learner (lgbm) also gets a bounded sample of
the whole fit part to take its bin bounds from (``Algorithm.bin_sample``), so every
worker bins alike, as one node would. Every worker also gets the whole tune part (a tenth
of the training range), so that all of them take the same early-stopping decision.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers import algorithms
from trainers.algorithms import FitOptions, FittedModel, Peers, TrainData


def _ignore(done: int, total: int) -> None:
    """A worker other than the first does not move the job's progress bar."""


def quiet(options: FitOptions) -> FitOptions:
    """The options a worker is shipped: without the attempt's callbacks."""
    return dataclasses.replace(options, on_iteration=_ignore, on_score=None, on_metrics=None)


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker gets besides its shard: small, shipped to each."""

    algorithm: str
    hyperparameters: Mapping[str, Any]
    options: FitOptions  # without callbacks: the runner gives each worker its own
    x_tune: np.ndarray
    y_tune: np.ndarray
    feature_names: tuple[str, ...]
    stats: Mapping[str, np.ndarray]  # of the whole fit part (trainers.algorithms.Peers)
    shard_rows: tuple[int, ...]
    bins: tuple[np.ndarray, np.ndarray] | None = None  # the algorithm's bin sample of the fit part

    @property
    def workers(self) -> int:
        return len(self.shard_rows)


@dataclass(frozen=True)
class Shard:
    """One worker's rows of the fit part."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None


def statistics(data: TrainData) -> dict[str, np.ndarray]:
    return {
        "x_mean": data.x_train.mean(axis=0),
        "x_std": data.x_train.std(axis=0),
        "y_mean": np.array([data.y_train.mean()]),
        "y_std": np.array([data.y_train.std()]),
    }


def plan(
    algorithm: str, hyperparameters: Mapping[str, Any], data: TrainData, options: FitOptions, workers: int
) -> tuple[WorkerPlan, list[Shard]]:
    """Cut the fit part into ``workers`` contiguous shards (ValueError when there are fewer
    rows than workers) and say what each worker gets besides."""
    rows = len(data.y_train)
    if rows < workers:
        raise ValueError(f"{rows} training rows cannot be shared out over {workers} workers")
    if algorithms.get(algorithm).context_rows(hyperparameters):
        # Windows of consecutive rows: contiguous runs, so no window crosses a shard.
        bounds = np.linspace(0, rows, workers + 1).round().astype(int)
        picks = [np.arange(a, b) for a, b in itertools.pairwise(bounds)]
    else:
        # Rows stand alone: every worker takes every n-th row, so each shard spans the whole
        # range (a season per worker would bias its histograms' bins, or its trees).
        picks = [np.arange(rank, rows, workers) for rank in range(workers)]
    groups = data.train_groups
    shards = [Shard(data.x_train[idx], data.y_train[idx], None if groups is None else groups[idx]) for idx in picks]
    bins = None
    if wanted := algorithms.get(algorithm).bin_sample:
        rng = np.random.default_rng(options.seed)
        sample = np.sort(rng.choice(rows, size=wanted, replace=False)) if rows > wanted else np.arange(rows)
        bins = (data.x_train[sample], data.y_train[sample])
    worker_plan = WorkerPlan(
        algorithm,
        dict(hyperparameters),
        quiet(options),
        data.x_tune,
        data.y_tune,
        data.feature_names,
        statistics(data),
        tuple(len(s.y) for s in shards),
        bins,
    )
    return worker_plan, shards


def fit_worker(
    worker_plan: WorkerPlan, shard: Shard, *, rank: int, network: Mapping[str, Any], on_iteration: Callable[[int, int], None]
) -> FittedModel:
    """One worker's part: fit on its shard with the whole tune part. ``on_iteration`` is
    called on every rank (a runner may check the worker's memory there); only the first
    rank's calls are the job's progress."""
    width = len(worker_plan.feature_names)
    data = TrainData(
        shard.x,
        shard.y,
        np.empty((0, width)),
        np.empty(0),
        worker_plan.feature_names,
        worker_plan.x_tune,
        worker_plan.y_tune,
        shard.groups,
    )
    options = dataclasses.replace(worker_plan.options, on_iteration=on_iteration)
    peers = Peers(rank, worker_plan.workers, network, worker_plan.stats, worker_plan.bins)
    return algorithms.get(worker_plan.algorithm).fit_shard(data, worker_plan.hyperparameters, options, peers)
