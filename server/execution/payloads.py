"""What travels from the server to a Ray task, and back: plain data, so it reaches any node."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import tenacity

from server.observability import LogFormat
from storage.records import JobError
from trainers.errors import TrainingError
from trainers.spec import TrainingSpec

# Waiting out a database outage in this process (the dispatcher's writes, a Ray task's
# reports): 0.2 s, doubling, at most 5 s between tries.
OUTAGE_BACKOFF = tenacity.wait_exponential(multiplier=0.2, max=5.0)


@dataclass(frozen=True)
class RetryPolicy:
    """The guide's automatic retry: after a failure that running again may fix, the job is
    queued again after base, 2x base, 4x base seconds (1, 2, 4 minutes by default), at most
    ``max_retries`` times. Data and configuration errors are not retried."""

    max_retries: int = 3
    base_seconds: float = 60.0

    def delay(self, attempt: int, retryable: bool) -> float | None:
        """Seconds until attempt ``attempt + 1`` starts, or None for no retry."""
        if not retryable or attempt > self.max_retries:
            return None
        return float(self.base_seconds * 2 ** (attempt - 1))


@dataclass(frozen=True)
class TaskSettings:
    """How a task runs, the same for every job of a server."""

    database_url: str
    artifact_root: str
    num_threads: int = 1
    retry: RetryPolicy = RetryPolicy()
    guard_interval: float = 0.5  # how often the task checks that its attempt still runs
    guard_grace: float = 5.0  # how long a stopped task may take before its Ray worker process is ended
    log_format: LogFormat = "text"
    log_level: str = "INFO"
    mlflow_uri: str = ""  # where jobs with mlflow_tracking log
    mlflow_artifact_root: str | None = None  # artifact location of the experiments they create (the local store)
    job_memory: int = 0  # bytes a single-node attempt may use (AIHUB_JOB_MEMORY; 0: no limit of ours)


@dataclass(frozen=True)
class JobPayload:
    """One attempt of a job: the validated spec (its canonical form and hash come with it)."""

    job_id: uuid.UUID
    attempt: int
    tenant_id: str
    spec: TrainingSpec
    settings: TaskSettings
    retry_number: int = 0  # which automatic retry this is counts from here (attempts handed back do not count); 0: attempt

    @property
    def failed_attempts(self) -> int:
        """The attempts so far that count against the retry budget, this one included."""
        return self.retry_number or self.attempt


class AttemptEnd(enum.StrEnum):
    """How an attempt ended: the task's own outcome (the first three), or RETURNED when the
    dispatcher handed the job back to the queue (its server stopping, its Ray cluster lost)."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # the task saw its attempt end (a cancel, or the job moved on without it)
    RETURNED = "RETURNED"


@dataclass(frozen=True)
class Outcome:
    status: AttemptEnd  # COMPLETED, FAILED or CANCELLED
    model_version: int | None = None
    error: JobError | None = None
    retry_in: float | None = None  # FAILED: when the automatic retry is planned, if any
    written: bool = True  # False: the database was unreachable at the end; the dispatcher writes it


@dataclass(frozen=True)
class EvaluatePayload:
    """Score a registered model on another window."""

    tenant_id: str
    spec: TrainingSpec  # the version's training spec with the window to score
    artifact_path: str
    trained_metrics: Mapping[str, float]
    settings: TaskSettings


@dataclass(frozen=True)
class ForecastPayload:
    """Forecast the hours after an origin from a registered forecast version."""

    tenant_id: str
    spec: TrainingSpec  # the version's training spec
    artifact_path: str
    horizon_hours: int
    settings: TaskSettings
    origin: datetime | None = None  # None: per series, its latest hour with the target
    series: tuple[str, ...] | None = None  # None: every series of the table
    inputs: pd.DataFrame | None = None  # known-ahead values sent inline (replace the table's)
    history_hours: int = 0  # also the actuals of this many hours up to the origin


@dataclass(frozen=True)
class DetectPayload:
    """Score a window (stored rows, or the rows given) with a registered anomaly version."""

    tenant_id: str
    spec: TrainingSpec  # the version's training spec with the window to score
    artifact_path: str
    trained_metrics: Mapping[str, float]
    settings: TaskSettings
    rows: pd.DataFrame | None = None  # rows sent inline (history first), instead of the table's


class WorkerLost(TrainingError):
    """The Ray worker process running an attempt died (killed, or its node was lost) before
    the attempt ended: the job goes back to the queue, not as one of its retries, up to the
    lost-lease cap (AIHUB_MAX_LOST_LEASES)."""

    reason = "WorkerLost"
