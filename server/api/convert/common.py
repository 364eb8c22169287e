"""What every service's conversions share: the enum tables (one explicit table per enum:
domain value <-> proto value; a proto value a table lacks is a RequestError naming the
field), checked plain values (text, metadata), ids and opaque page tokens."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

from google.protobuf import timestamp_pb2

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.errors import RequestError
from storage import records
from storage.features import FileFormat
from trainers import spec as specs
from trainers.errors import shown

MODEL_TYPES: Mapping[specs.ModelType, pb.ModelType] = {specs.ModelType.FORECAST: pb.FORECAST, specs.ModelType.ANOMALY: pb.ANOMALY}
PRIORITIES: Mapping[records.Priority, pb.Priority] = {
    records.Priority.CRITICAL: pb.CRITICAL,
    records.Priority.HIGH: pb.HIGH,
    records.Priority.NORMAL: pb.NORMAL,
    records.Priority.LOW: pb.LOW,
}
STATUSES: Mapping[records.JobStatus, pb.JobStatus] = {
    records.JobStatus.PENDING: pb.PENDING,
    records.JobStatus.RUNNING: pb.RUNNING,
    records.JobStatus.COMPLETED: pb.COMPLETED,
    records.JobStatus.FAILED: pb.FAILED,
    records.JobStatus.CANCELLED: pb.CANCELLED,
}
LEVELS: Mapping[records.LogLevel, pb.LogLevel] = {
    records.LogLevel.DEBUG: pb.DEBUG,
    records.LogLevel.INFO: pb.INFO,
    records.LogLevel.WARNING: pb.WARNING,
    records.LogLevel.ERROR: pb.ERROR,
}
FILE_FORMATS: Mapping[int, FileFormat | None] = {pb.DATA_FORMAT_UNSPECIFIED: None, pb.CSV: "csv", pb.PARQUET: "parquet"}
# Bounds on the free-form parts of a request.
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, newline and return are text
METRIC_FIELDS = ("mae", "rmse", "mape", "r2_score", "training_duration_seconds", "training_data_size")


K = TypeVar("K")


def _inverse(table: Mapping[K, int]) -> dict[int, K]:
    return {int(v): k for k, v in table.items()}


_MODEL_TYPE_OF = _inverse(MODEL_TYPES)
_PRIORITY_OF = _inverse(PRIORITIES)
_STATUS_OF = _inverse(STATUSES)


def as_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


# --- enums -----------------------------------------------------------------------------------
def model_type_from_pb(value: int, field: str = "model_type") -> specs.ModelType | None:
    """The domain model type; None when unspecified."""
    if value == pb.MODEL_TYPE_UNSPECIFIED:
        return None
    if value not in _MODEL_TYPE_OF:
        raise RequestError(field, f"unknown model type value {value}: one of forecast, anomaly")
    return _MODEL_TYPE_OF[value]


def model_type_to_pb(name: str) -> pb.ModelType:
    return MODEL_TYPES[specs.ModelType(name)] if name else pb.MODEL_TYPE_UNSPECIFIED


def priority_from_pb(value: int, *, default: records.Priority | None = records.Priority.NORMAL) -> records.Priority:
    if value == pb.PRIORITY_UNSPECIFIED:
        if default is None:
            raise RequestError("priority", "is required: one of critical, high, normal, low")
        return default
    if value not in _PRIORITY_OF:
        raise RequestError("priority", f"unknown priority value {value}")
    return _PRIORITY_OF[value]


def status_from_pb(value: int) -> records.JobStatus | None:
    if value == pb.JOB_STATUS_UNSPECIFIED:
        return None
    if value not in _STATUS_OF:
        raise RequestError("status", f"unknown status value {value}")
    return _STATUS_OF[value]


def file_format_from_pb(value: int) -> FileFormat | None:
    if value not in FILE_FORMATS:
        raise RequestError("format", f"unknown format value {value}: one of csv, parquet")
    return FILE_FORMATS[value]


# --- plain values -------------------------------------------------------------------------------
def checked_text(value: str, field: str, *, max_len: int, required: bool = False) -> str:
    """A short free-text field: at most ``max_len`` characters, no control characters."""
    if required and not value.strip():
        raise RequestError(field, "is required")
    if len(value) > max_len:
        raise RequestError(field, f"is {len(value)} characters long; at most {max_len} are allowed")
    if _CONTROL.search(value):
        raise RequestError(field, "holds a control character")
    return value


def metadata(values: Mapping[str, str]) -> dict[str, str]:
    """A job's labels: at most MAX_METADATA_ENTRIES, each key and value bounded, no control characters."""
    if len(values) > MAX_METADATA_ENTRIES:
        raise RequestError("metadata", f"has {len(values)} entries; at most {MAX_METADATA_ENTRIES} are allowed")
    for key, value in values.items():
        checked_text(key, "metadata", max_len=MAX_METADATA_KEY, required=True)
        checked_text(value, f"metadata.{key}", max_len=MAX_METADATA_VALUE)
    return dict(values)


# --- ids and paging ----------------------------------------------------------------------------
def parse_uuid(value: str, field: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise RequestError(field, f"{shown(value)} is not {what} (a UUID)") from None


def parse_job_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "job_id", "a job id")


def parse_model_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "model_id", "a model version id")


# Page tokens are opaque (AIP-158): a listing's cursor and a predictions page's offset are
# both the same URL-safe base64 of their parts, told apart by their first part.
NOT_ISSUED = "is not a token this service issued (pass next_page_token unchanged)"


def _token(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")


def _token_parts(token: str, kind: str) -> list[str]:
    try:
        parts = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        raise RequestError("page_token", NOT_ISSUED) from None
    if parts[0] != kind:
        raise RequestError("page_token", NOT_ISSUED)
    return parts[1:]


def encode_page_token(cursor: tuple[datetime, uuid.UUID] | None) -> str:
    if cursor is None:
        return ""
    return _token("jobs", cursor[0].isoformat(), str(cursor[1]))


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    try:
        at, job_id = _token_parts(token, "jobs")
        return datetime.fromisoformat(at), uuid.UUID(job_id)
    except ValueError:
        raise RequestError("page_token", NOT_ISSUED) from None


def encode_offset_token(offset: int) -> str:
    """The token of a page that starts at ``offset`` ("" for the first)."""
    return _token("offset", str(offset)) if offset else ""


def decode_offset_token(token: str) -> int:
    if not token:
        return 0
    parts = _token_parts(token, "offset")
    text = parts[0] if len(parts) == 1 else ""
    if not text.isdigit() or len(text) > 9:
        raise RequestError("page_token", NOT_ISSUED)
    return int(text)
