"""What the pipeline needs from the outside, as protocols: where it reports progress and log
lines (``Reporter``), where its data comes from (``DataSource``), who runs a hyperparameter
search (``Tuner``), who trains on several workers (``Distributor``) and where the model
goes (``ModelRegistry``). The service implements them over PostgreSQL and Ray
(server/execution/); trainers/local.py has in-memory ones for notebooks, tests and
benchmarks."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from trainers.spec import TrainingSpec

if TYPE_CHECKING:  # trainers.tuning imports the evaluation, which imports these ports
    from trainers.algorithms import FittedModel
    from trainers.distributed import Shard, WorkerPlan
    from trainers.shards import ShardRead
    from trainers.tuning import TrialResult, TrialSetup

STEPS = ("data_loading", "preprocessing", "training", "evaluation", "registration")
# Progress (percent) at the start of each step; training fills 20..80 as rounds complete.
STEP_START = {"data_loading": 0, "preprocessing": 10, "training": 20, "evaluation": 80, "registration": 90}


class Tracker(Protocol):
    """An experiment tracker (MLflow): told the training metrics of every round or epoch."""

    def round(self, step: int, values: Mapping[str, float]) -> None: ...


class Level(enum.StrEnum):
    """A log line's level (the server stores it as storage.records.LogLevel, the same names)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Reporter(Protocol):
    """Where the pipeline reports. Any call may raise JobCancelled to stop the run."""

    def step(self, name: str, progress: int) -> None: ...

    def progress(self, progress: int) -> None: ...

    def log(self, level: Level, message: str) -> None: ...

    def metrics(self, values: Mapping[str, float], *, final: bool = False) -> None:
        """Record metrics of the attempt (a name written again is replaced). ``final``: the
        evaluation's metrics, which replace everything recorded before (the live ones)."""
        ...


class DataSource(Protocol):
    def load(self, table: str, columns: Sequence[str], start: datetime, end: datetime, series: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows (a UTC ``timestamp`` column plus ``columns``) in start..end, of these
        ``series`` only when given; raises DataLoadError naming the table or column that is
        missing."""
        ...

    def outline(self, table: str, start: datetime, end: datetime) -> list[tuple[str, int, datetime, datetime]]:
        """Per series with rows in start..end: (series_id, rows, first and last timestamp),
        without loading them (what a distributed job cuts its shards by)."""
        ...


class Tuner(Protocol):
    def search(self, setup: TrialSetup, on_trial: Callable[[TrialResult], None]) -> list[TrialResult]:
        """Run ``setup.tuning.num_trials`` trials of trainers.tuning.run_trial, at most
        ``max_concurrent_trials`` at once, calling ``on_trial`` as each one ends."""
        ...


class Distributor(Protocol):
    @property
    def prepares_shards(self) -> bool:
        """Its workers can read and prepare their own shards (``gang``)."""
        ...

    def fit(self, plan: WorkerPlan, shards: Sequence[Shard], reporter: Reporter, on_iteration: Callable[[int, int], None]) -> FittedModel:
        """Train on one worker per shard (trainers.distributed.fit_worker, each worker
        reading only its own shard), calling ``on_iteration`` as the first worker trains and
        logging where the workers ran; return the one model (the algorithm's ``combine`` of
        the workers' models)."""
        ...

    def gang(self, spec: TrainingSpec, reads: Sequence[ShardRead], reporter: Reporter) -> AbstractContextManager[Gang]:
        """Start one worker per read, each with a ShardWorker over its own read of the
        database; they end when the context does."""
        ...


class Gang(Protocol):
    """A distributed job's workers, each holding a trainers.shards.ShardWorker of its shard."""

    def each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``ShardWorker.<method>(*args[r])`` on every worker r at once; the results in
        rank order (a worker's error is raised)."""
        ...

    def fit(self, plan: WorkerPlan, reporter: Reporter, on_iteration: Callable[[int, int], None]) -> FittedModel:
        """Train on every worker's own fit rows (Distributor.fit, without moving shards)."""
        ...


class ModelRegistry(Protocol):
    def artifact_dir(self) -> Path:
        """A fresh folder for this run's model."""
        ...

    def register(self, artifact: Path, spec: TrainingSpec, metrics: Mapping[str, float], importance: Mapping[str, float]) -> int:
        """Record the model (with its feature importance); returns its version number."""
        ...
