"""Frozen records and enums that storage hands out. No ORM row leaves storage/."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


# The one transition table every status change goes through (see storage.jobs).
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    # RUNNING -> PENDING is a requeue (a lost worker, later: an expired lease).
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PENDING}),
    # FAILED -> CANCELLED only while an automatic retry is planned (storage.jobs.cancel).
    JobStatus.FAILED: frozenset({JobStatus.PENDING, JobStatus.CANCELLED}),
    JobStatus.CANCELLED: frozenset({JobStatus.PENDING}),
    JobStatus.COMPLETED: frozenset(),
}


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """The states a job may move to ``target`` from."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


class Priority(enum.StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        """Stored rank: the claim orders by it ascending (critical first)."""
        return _RANKS[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return _BY_RANK[rank]


_RANKS = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
_BY_RANK = {v: k for k, v in _RANKS.items()}


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass(frozen=True)
class JobError:
    reason: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    retryable: bool = False  # whether running again may help (the retry policy decides if it will)


@dataclass(frozen=True)
class NewJob:
    """What a caller supplies to create a job."""

    tenant_id: str
    model_type: str
    algorithm: str
    priority: Priority
    config: Mapping[str, Any]
    metadata: Mapping[str, str]
    request_id: str | None = None


@dataclass(frozen=True)
class Job:
    job_id: uuid.UUID
    tenant_id: str
    model_type: str
    algorithm: str
    status: JobStatus
    priority: Priority
    progress: int
    current_step: str
    config: Mapping[str, Any]
    metadata: Mapping[str, str]
    request_id: str | None
    attempt: int
    error: JobError | None
    model_version: int | None
    metrics: Mapping[str, float]
    claimed_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    retry_at: datetime | None = None  # a FAILED job that will be queued again by itself then


@dataclass(frozen=True)
class LogLine:
    job_id: uuid.UUID
    sequence: int
    attempt: int
    time: datetime
    level: LogLevel
    step: str
    message: str


@dataclass(frozen=True)
class ModelVersion:
    model_id: uuid.UUID
    tenant_id: str
    model_type: str
    version: int
    job_id: uuid.UUID
    algorithm: str
    artifact_uri: str
    features: tuple[str, ...]
    target: str
    training_start: datetime
    training_end: datetime
    metrics: Mapping[str, float]
    feature_importance: Mapping[str, float]
    config: Mapping[str, Any]
    config_hash: str
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class NewModelVersion:
    tenant_id: str
    model_type: str
    job_id: uuid.UUID
    algorithm: str
    artifact_uri: str
    features: tuple[str, ...]
    target: str
    training_start: datetime
    training_end: datetime
    metrics: Mapping[str, float]
    config: Mapping[str, Any]
    feature_importance: Mapping[str, float] = field(default_factory=dict)
    config_hash: str = ""


@dataclass(frozen=True)
class WorkerNode:
    node_id: str
    address: str
    status: str
    resources: Mapping[str, float]


@dataclass(frozen=True)
class RayCluster:
    cluster_id: str
    address: str
    status: str
    num_workers: int
    resources: Mapping[str, float]
    available_resources: Mapping[str, float]
    nodes: tuple[WorkerNode, ...]
    updated_at: datetime | None = None
