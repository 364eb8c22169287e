"""Frozen records and enums that storage hands out; each record reads itself from a row
(``from_row``). No row leaves storage/."""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

import asyncpg

Row = asyncpg.Record  # the one row type (storage.db runs everything on asyncpg), read by column name


def json_value(value: Any) -> Any:
    """A JSONB value as asyncpg hands it over: a string."""
    return json.loads(value) if isinstance(value, str) else value


def _optional(row: Row, name: str, default: Any) -> Any:
    """A column a query may leave out."""
    return row.get(name, default)


def _columns(row: Row, names: tuple[str, ...]) -> dict[str, Any]:
    """The columns a record takes as they are (same name, no conversion)."""
    return {name: row[name] for name in names}


_JOB_COLUMNS = (
    "tenant_id", "model_type", "algorithm", "progress", "current_step", "request_id", "attempt", "model_version",
    "claimed_by", "created_at", "started_at", "finished_at", "updated_at", "retry_at", "config_hash",
)  # fmt: skip
_OPTIONAL_JOB_COLUMNS = ("lost_leases", "free_attempts", "request_hash", "schedule_id", "scheduled_for", "mlflow_run_id")
_MODEL_VERSION_COLUMNS = (
    "tenant_id", "model_type", "version", "job_id", "algorithm", "artifact_uri", "target", "training_start",
    "training_end", "config_hash", "created_at", "deleted_at",
)  # fmt: skip


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


# The one transition table every status change goes through: user operations check it at
# run time (storage.jobs), the queue's statements encode its edges in their WHERE clauses
# (storage.queue); tests/unit/test_storage_sql.py checks every statement against it.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    # RUNNING -> PENDING is a requeue: an expired lease (its server was lost) or a server handing its jobs back.
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
    """A job's priority, as the guide names it."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Stored rank: the claim orders by it ascending (critical first)."""
        return _RANKS[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return _BY_RANK[rank]


# The one mapping between a priority and its stored rank.
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
    """What a caller supplies to create a job. ``config`` is the training spec's canonical
    form, ``config_hash`` its SHA-256 (both made by trainers.spec, stored as given)."""

    tenant_id: str
    model_type: str
    algorithm: str
    priority: Priority
    config: Mapping[str, Any]
    metadata: Mapping[str, str]
    request_id: str | None = None
    config_hash: str | None = None
    schedule_id: uuid.UUID | None = None  # the schedule whose firing made it
    scheduled_for: datetime | None = None  # that firing's time

    @property
    def request_hash(self) -> str:
        """What makes two create requests the same request (AIP-155): every field the caller
        sent, in canonical form."""
        body = {
            "tenant_id": self.tenant_id,
            "model_type": self.model_type,
            "priority": self.priority.value,
            "config": self.config,
            "metadata": dict(sorted(self.metadata.items())),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


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
    config_hash: str | None = None  # None for jobs created before the hash was stored
    lost_leases: int = 0  # times its server was lost while it ran (its lease expired)
    free_attempts: int = 0  # attempts that ended without failing (handed back): not in the retry budget
    request_hash: str | None = None  # the create request's fingerprint (request_id reuse)
    schedule_id: uuid.UUID | None = None  # the schedule whose firing made it
    scheduled_for: datetime | None = None  # that firing's time
    mlflow_run_id: str | None = None  # the MLflow run of its last tracked attempt

    @property
    def failed_attempts(self) -> int:
        """The attempts that count against the automatic retry budget."""
        return self.attempt - self.free_attempts

    @classmethod
    def from_row(cls, row: Row, metrics: Mapping[str, float] | None = None) -> Self:
        """A job from a training_jobs row; ``metrics`` are the current attempt's (or the
        row's ``metrics_json`` column when the query aggregated them)."""
        if metrics is None and "metrics_json" in row:
            metrics = json_value(row["metrics_json"])
        error = None
        if row["error_reason"]:
            error = JobError(row["error_reason"], row["error_message"] or "", json_value(row["error_details"]) or {})
        return cls(
            job_id=row["id"],
            status=JobStatus(row["status"]),
            priority=Priority.from_rank(row["priority"]),
            config=json_value(row["config"]),
            metadata=json_value(row["metadata"]),
            error=error,
            metrics=dict(metrics or {}),
            **_columns(row, _JOB_COLUMNS),
            **{name: row[name] for name in _OPTIONAL_JOB_COLUMNS if name in row},
        )


@dataclass(frozen=True)
class LogLine:
    job_id: uuid.UUID
    sequence: int
    attempt: int
    time: datetime
    level: LogLevel
    step: str
    message: str

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(row["job_id"], row["seq"], row["attempt"], row["ts"], LogLevel(row["level"]), row["step"], row["message"])


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
    keep: bool = False  # protected from the retention sweep
    mlflow_run_id: str | None = None  # the MLflow run that logged it
    aliases: tuple[str, ...] = ()  # the aliases that point at it (when the query read them)

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            model_id=row["id"],
            **{name: row[name] for name in ("keep", "mlflow_run_id") if name in row},
            aliases=tuple(row["aliases"]) if "aliases" in row else (),
            features=tuple(json_value(row["features"])),
            metrics=json_value(row["metrics"]),
            feature_importance=json_value(row["feature_importance"]),
            config=json_value(row["config"]),
            **_columns(row, _MODEL_VERSION_COLUMNS),
        )


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
    mlflow_run_id: str | None = None  # the MLflow run that logged it


@dataclass(frozen=True)
class WorkerNode:
    """A node of a Ray cluster (Ray calls them worker nodes)."""

    node_id: str
    address: str
    status: str
    resources: Mapping[str, float]  # totals
    in_use: Mapping[str, float] = field(default_factory=dict)  # of the totals, held by tasks and actors now

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(row["node_id"], row["address"], row["status"], json_value(row["resources"]), json_value(row["in_use"]))


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

    @classmethod
    def from_row(cls, row: Row, nodes: tuple[WorkerNode, ...]) -> Self:
        return cls(
            row["cluster_id"],
            row["address"],
            row["status"],
            row["num_workers"],
            json_value(row["resources"]),
            json_value(row["available_resources"]),
            nodes,
            row["updated_at"],
        )


@dataclass(frozen=True)
class TenantQuota:
    """A tenant's limits. ``max_running_jobs`` None: no cap beyond the fair share."""

    tenant_id: str
    max_queued_jobs: int
    max_running_jobs: int | None
    max_priority: Priority
    max_import_bytes: int
    updated_at: datetime
    keep_versions: int | None = None  # retention: the newest N versions per model type; None: all
    min_schedule_interval_seconds: int = 300  # the shortest gap between two firings of one schedule
    max_scheduled_jobs_per_day: int = 500  # jobs the tenant's schedules may create in any 24 hours
    max_open_streams: int = 200  # log and watch streams open at once (per server)

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            max_priority=Priority.from_rank(row["max_priority"]),
            keep_versions=_optional(row, "keep_versions", None),
            **_columns(
                row,
                (
                    "tenant_id",
                    "max_queued_jobs",
                    "max_running_jobs",
                    "max_import_bytes",
                    "updated_at",
                    "min_schedule_interval_seconds",
                    "max_scheduled_jobs_per_day",
                    "max_open_streams",
                ),
            ),
        )


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never the secret, only who it acts for."""

    key_id: str
    tenant_id: str | None  # None: an admin key
    admin: bool
    name: str
    created_at: datetime
    revoked_at: datetime | None
    local: bool = False  # made while authentication was off: refused when it is required
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            **_columns(row, ("key_id", "tenant_id", "admin", "name", "created_at", "revoked_at", "local", "expires_at", "last_used_at"))
        )


@dataclass(frozen=True)
class AuditEvent:
    """One line of the audit trail: who (``actor``, ``key_id``) did ``action`` to ``target``
    for ``tenant_id`` ('*': every tenant)."""

    id: int
    at: datetime
    actor: str
    key_id: str | None
    tenant_id: str
    action: str
    target: str
    details: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            details=json_value(row["details"]) or {}, **_columns(row, ("id", "at", "actor", "key_id", "tenant_id", "action", "target"))
        )


@dataclass(frozen=True)
class NewSchedule:
    """A cron schedule as a caller gives it (validated by the server before it is stored)."""

    tenant_id: str
    name: str
    cron: str
    timezone: str
    window: str | None  # ISO 8601 duration of a training window ending at each firing
    action: str  # train, evaluate, train_and_evaluate, forecast or train_and_promote
    model_type: str
    priority: Priority
    config: Mapping[str, Any]
    metadata: Mapping[str, str]
    degradation: Mapping[str, Any] | None
    paused: bool
    next_fire_at: datetime
    alias: str | None = None  # the alias its firings use
    forecast: Mapping[str, Any] | None = None  # action forecast: horizon_hours, series
    promotion: Mapping[str, Any] | None = None  # action train_and_promote: window, metric, min_improvement


@dataclass(frozen=True)
class Schedule:
    schedule_id: uuid.UUID
    tenant_id: str
    name: str
    cron: str
    timezone: str
    window: str | None
    action: str
    model_type: str
    priority: Priority
    config: Mapping[str, Any]
    metadata: Mapping[str, str]
    degradation: Mapping[str, Any] | None
    paused: bool
    next_fire_at: datetime
    last_fired_at: datetime | None
    missed_firings: int
    created_at: datetime
    updated_at: datetime
    alias: str | None = None
    forecast: Mapping[str, Any] | None = None
    promotion: Mapping[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            schedule_id=row["id"],
            priority=Priority.from_rank(row["priority"]),
            config=json_value(row["config"]),
            metadata=json_value(row["metadata"]),
            degradation=json_value(row["degradation"]),
            alias=row.get("alias"),
            forecast=json_value(row.get("forecast")),
            promotion=json_value(row.get("promotion")),
            **_columns(
                row,
                ("tenant_id", "name", "cron", "timezone", "window", "action", "model_type", "paused", "next_fire_at",
                 "last_fired_at", "missed_firings", "created_at", "updated_at"),
            ),
        )  # fmt: skip


@dataclass(frozen=True)
class ScheduledJob:
    """One of a schedule's recent jobs."""

    job_id: uuid.UUID
    status: JobStatus
    scheduled_for: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class AlertTarget:
    target_id: uuid.UUID
    tenant_id: str
    url: str
    secret: str
    events: tuple[str, ...]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(row["id"], row["tenant_id"], row["url"], row["secret"], tuple(row["events"]), row["created_at"])


@dataclass(frozen=True)
class AlertDelivery:
    delivery_id: int
    tenant_id: str
    target_id: uuid.UUID
    event: str
    body: Mapping[str, Any]
    status: str
    attempts: int
    last_error: str | None
    response_status: int | None
    created_at: datetime
    delivered_at: datetime | None
    url: str = ""  # the target's, when the query joined it
    secret: str = ""

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            delivery_id=row["id"],
            body=json_value(row["body"]),
            url=_optional(row, "url", ""),
            secret=_optional(row, "secret", ""),
            **_columns(
                row,
                ("tenant_id", "target_id", "event", "status", "attempts", "last_error", "response_status", "created_at", "delivered_at"),
            ),
        )


@dataclass(frozen=True)
class DegradationCheck:
    check_id: uuid.UUID
    tenant_id: str
    schedule_id: uuid.UUID | None
    model_id: uuid.UUID | None
    model_type: str
    policy: Mapping[str, Any]
    status: str
    window_start: datetime
    window_end: datetime
    metrics: Mapping[str, float]
    baseline: Mapping[str, float]
    degraded: bool | None
    message: str
    created_at: datetime
    finished_at: datetime | None
    kind: str = "degradation"  # degradation, forecast or promotion
    alias: str | None = None
    job_id: uuid.UUID | None = None  # promotion: the challenger's job
    promoted: bool | None = None  # promotion: whether the alias moved

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            check_id=row["id"],
            **{name: row[name] for name in ("kind", "alias", "job_id", "promoted") if name in row},
            policy=json_value(row["policy"]),
            metrics=json_value(row["metrics"]),
            baseline=json_value(row["baseline"]),
            **_columns(
                row,
                ("tenant_id", "schedule_id", "model_id", "model_type", "status", "window_start", "window_end", "degraded", "message",
                 "created_at", "finished_at"),
            ),
        )  # fmt: skip


@dataclass(frozen=True)
class AliasMove:
    moved_at: datetime
    from_model_id: uuid.UUID | None
    from_version: int | None
    to_model_id: uuid.UUID | None
    to_version: int | None
    moved_by: str
    reason: str

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(**_columns(row, ("moved_at", "from_model_id", "from_version", "to_model_id", "to_version", "moved_by", "reason")))


@dataclass(frozen=True)
class ModelAlias:
    alias: str
    tenant_id: str
    model_type: str
    model_id: uuid.UUID | None  # None: removed (its moves remain)
    model_version: int | None
    updated_at: datetime
    moves: tuple[AliasMove, ...] = ()


@dataclass(frozen=True)
class StoredForecast:
    timestamp: datetime
    series_id: str
    forecast: float
    origin: datetime
    model_id: uuid.UUID
    model_version: int
    alias: str
    schedule_id: uuid.UUID | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(
            **_columns(
                row, ("timestamp", "series_id", "forecast", "origin", "model_id", "model_version", "alias", "schedule_id", "created_at")
            )
        )
