"""The error tree every layer shares. ``reason`` carries the guide's error names."""

from __future__ import annotations

import errno
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


class OutOfMemory(TrainingError):
    """The attempt needed more memory than it could get: an allocation refused, or its
    worker killed by Ray's memory monitor. Running it again unchanged fails again."""

    reason = "OutOfMemory"
    retryable = False
    REMEDY = (
        "lower training_options.batch_size or use training_options.use_sample, give it more ray_config.memory_per_worker, "
        'or train with "distributed": true'
    )


class ResourceExhausted(TrainingError):
    """A resource of the service ran out (a full disk): an operator's matter, so it is not
    retried unchanged; retry the job once the space is there."""

    reason = "ResourceExhausted"
    retryable = False


ALLOCATION_FAILED = ("can't allocate memory", "cannot allocate memory", "unable to allocate", "out of memory", "bad_alloc")
LOW_DISK_BYTES = 16 << 20  # free space under which a failure is put down to a full disk


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An error's words, short: its first line, cut to ``limit`` characters (its type's name
    when it has none). Ray's and the libraries' messages can run to several KB."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def classify(exc: BaseException, step: str = "", *, disk_free: int | None = None) -> TrainingError | None:
    """A failure that says what ran out, as its own reason with a short message and the
    remedy (not retried unchanged); None for any other failure. ``disk_free``: the bytes
    free where the attempt writes; a failure with less than LOW_DISK_BYTES free is taken for
    a full disk (a library that cannot write says so in its own words: LightGBM's "Cannot
    write binary data")."""
    where = f" in step {step}" if step else ""
    text = first_line(exc)
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if (
        any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain)
        or "no space left on device" in str(exc).lower()
        or (disk_free is not None and disk_free < LOW_DISK_BYTES)
    ):
        return ResourceExhausted(
            f"no space left on the service's disk{where} ({type(exc).__name__}: {text}); "
            "free space (or give the artifact store a larger volume), then retry",
            details={"step": step, "resource": "disk"},
        )
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in ALLOCATION_FAILED)):
        return OutOfMemory(
            f"the attempt could not allocate memory{where} ({text}); {OutOfMemory.REMEDY}", details={"step": step, "resource": "memory"}
        )
    return None


class JobCancelled(TrainingError):
    """The job was cancelled (or superseded) while it ran; the run stops quietly."""

    reason = "Cancelled"
    retryable = False


def shown(value: object, limit: int = 80) -> str:
    """A caller's value as an error message may echo it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
