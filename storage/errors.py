"""Storage's own exception tree; asyncpg/SQLAlchemy errors are translated here, once."""

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
