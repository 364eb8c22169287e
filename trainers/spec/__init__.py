"""A job's configuration: the validated :class:`TrainingSpec` (``model``) and the checks
that build it (``checks``). This module is the surface the rest of the project uses."""

from trainers.spec.checks import build, parse_window, validate, window_violations
from trainers.spec.model import (
    DATA_CHECKS,
    DEFAULT_SEED,
    DEFAULT_TABLES,
    DEFAULT_VALIDATION_SPLIT,
    MODEL_TYPES,
    DataChecks,
    Holidays,
    ModelType,
    TrainingSpec,
    format_time,
    parse_time,
)
from trainers.spec.recipes import CALENDAR_FEATURES, HOLIDAY_FEATURES
from trainers.spec.resources import WorkerRequest, parse_memory, worker_request

__all__ = [
    "CALENDAR_FEATURES",
    "DATA_CHECKS",
    "DEFAULT_SEED",
    "DEFAULT_TABLES",
    "DEFAULT_VALIDATION_SPLIT",
    "HOLIDAY_FEATURES",
    "MODEL_TYPES",
    "DataChecks",
    "Holidays",
    "ModelType",
    "TrainingSpec",
    "WorkerRequest",
    "build",
    "format_time",
    "parse_memory",
    "parse_time",
    "parse_window",
    "validate",
    "window_violations",
    "worker_request",
]
