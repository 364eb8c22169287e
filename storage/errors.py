"""Storage's own exception tree; asyncpg errors are translated into these in storage.db, once."""

from __future__ import annotations

import uuid


class StorageError(Exception):
    """Base of every error storage raises."""


class DatabaseUnavailable(StorageError):
    """PostgreSQL cannot be reached."""


class JobNotFound(StorageError):
    def __init__(self, job_id: uuid.UUID | str) -> None:
        super().__init__(f"training job {job_id} not found")
        self.job_id = str(job_id)


class RequestIdReused(StorageError):
    """A create request reused a request_id the tenant already used for another request."""

    def __init__(self, request_id: str, job_id: uuid.UUID) -> None:
        super().__init__(
            f"request_id {request_id!r} already created job {job_id} with a different request; "
            "send the same request to get that job again, or use a new request_id"
        )
        self.request_id = request_id
        self.job_id = str(job_id)


class ModelNotFound(StorageError):
    def __init__(self, model_id: uuid.UUID | str) -> None:
        super().__init__(f"model version {model_id} not found")
        self.model_id = str(model_id)


class InvalidTransition(StorageError):
    """The job is not in a state the requested change is allowed from."""

    def __init__(self, job_id: uuid.UUID, current: str, target: str, allowed_from: frozenset[str]) -> None:
        allowed = ", ".join(sorted(allowed_from)) or "no state"
        super().__init__(f"job {job_id} is {current}; it can become {target} only from {allowed}")
        self.job_id = str(job_id)
        self.current = current
        self.target = target


class FeatureTableNotFound(StorageError):
    def __init__(self, table: str) -> None:
        super().__init__(f"Table not found: features.{table}")
        self.table = table


class FeatureColumnNotFound(StorageError):
    def __init__(self, table: str, column: str) -> None:
        super().__init__(f"Column not found: features.{table}.{column}")
        self.table = table
        self.column = column


class InvalidFeatureData(StorageError):
    """Imported data that cannot go into a feature table (no timestamp, bad names, ...)."""

    def __init__(self, message: str, field: str = "data") -> None:
        super().__init__(message)
        self.field = field


class InvalidData(StorageError):
    """PostgreSQL refused a value (SQLSTATE class 22: out of range, NUL byte, bad format)."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"a value in the request was refused by the database (SQLSTATE {sqlstate}): out of range or malformed")
        self.sqlstate = sqlstate


class InvalidTenantId(StorageError):
    """A tenant id that is not a slug."""

    def __init__(self, tenant_id: str, pattern: str) -> None:
        shown = tenant_id if len(tenant_id) <= 80 else tenant_id[:77] + "..."
        super().__init__(f"tenant_id {shown!r} is not a valid tenant id: it must match {pattern}")


class MissingTenantScope(StorageError):
    """A tenant-data repository was called in a transaction that set no tenant (a bug)."""


class QuotaExceeded(StorageError):
    """A tenant's quota does not allow the request."""

    def __init__(self, tenant_id: str, limit: str, allowed: object, requested: object, message: str) -> None:
        super().__init__(message)
        self.tenant_id, self.limit, self.allowed, self.requested = tenant_id, limit, allowed, requested


class ApiKeyNotFound(StorageError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id} not found")
        self.key_id = key_id


class ScheduleNotFound(StorageError):
    def __init__(self, schedule_id: uuid.UUID | str) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = str(schedule_id)


class AlertTargetNotFound(StorageError):
    def __init__(self, target_id: uuid.UUID | str) -> None:
        super().__init__(f"alert target {target_id} not found")
        self.target_id = str(target_id)


class AliasNotFound(StorageError):
    def __init__(self, alias: str, model_type: str) -> None:
        super().__init__(f"no {model_type} model has the alias {alias!r}")
        self.alias = alias
        self.model_type = model_type


class VersionHasAliases(StorageError):
    """A version an alias points at cannot be deleted: move the alias first."""

    def __init__(self, model_id: uuid.UUID | str, aliases: list[str]) -> None:
        super().__init__(f"model version {model_id} is what {', '.join(aliases)} points at; move or remove the alias first")
        self.model_id = str(model_id)
        self.aliases = aliases
