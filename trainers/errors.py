"""The error tree every layer shares. ``reason`` carries the guide's error names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Violation:
    """One problem in a configuration: the field's path and what is wrong."""

    field: str
    description: str


class TrainingError(Exception):
    """A failure a user can act on. ``retryable`` says whether running again may help."""

    reason = "TrainingError"
    retryable = True

    def __init__(self, message: str, *, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: str(v) for k, v in (details or {}).items()}


class ConfigValidationError(TrainingError):
    reason = "ConfigValidationError"
    retryable = False

    def __init__(self, violations: Sequence[Violation], message: str = "Invalid training configuration") -> None:
        first = violations[0] if violations else None
        details = {"field": first.field, "error": first.description} if first else {}
        super().__init__(message, details=details)
        self.violations = list(violations)

    def __str__(self) -> str:
        return self.message + ": " + "; ".join(f"{v.field}: {v.description}" for v in self.violations)


class DataLoadError(TrainingError):
    reason = "DataLoadError"
    retryable = False


def no_rows_in_window(feature_table: str, start: datetime, end: datetime, **details: object) -> DataLoadError:
    """The error for a window of a feature table with no rows in it."""
    window = f"between {start:%Y-%m-%dT%H:%M:%S} and {end:%Y-%m-%dT%H:%M:%S}"
    return DataLoadError(f"No rows in features.{feature_table} {window}", details=details)


class ResourceError(TrainingError):
    reason = "ResourceError"


class JobCancelled(TrainingError):
    """The job was cancelled (or superseded) while it ran; the run stops quietly."""

    reason = "Cancelled"
    retryable = False


def shown(value: object, limit: int = 80) -> str:
    """A caller's value as an error message may echo it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
