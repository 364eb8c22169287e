"""Conversions between protobuf messages and the records/specs of storage and trainers.
The only module that knows both sides."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.errors import RequestError
from storage import records

STATUS_TO_PB = {s: pb.JobStatus.Value(s.value) for s in records.JobStatus}
PRIORITY_TO_PB = {p: pb.Priority.Value(p.value) for p in records.Priority}
LEVEL_TO_PB = {lvl: pb.LogLevel.Value(lvl.value) for lvl in records.LogLevel}


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def _integral(value: Any) -> Any:
    """Struct numbers are doubles; write whole numbers as ints (n_estimators: 100, not 100.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def config_to_dict(config: pb.TrainingConfig) -> dict[str, Any]:
    """The config as the guide writes it: only the fields that were set, snake_case,
    model_type lower-case, numbers as numbers."""
    out = json_format.MessageToDict(config, preserving_proto_field_name=True)
    if "model_type" in out:
        out["model_type"] = out["model_type"].lower()
    if "hyperparameters" in out:
        out["hyperparameters"] = _integral(out["hyperparameters"])
    return out


def dict_to_config(config: Mapping[str, Any]) -> pb.TrainingConfig:
    data = dict(config)
    if data.get("model_type"):
        data["model_type"] = str(data["model_type"]).upper()
    msg = pb.TrainingConfig()
    json_format.ParseDict(data, msg, ignore_unknown_fields=True)
    return msg


def model_type_name(value: int) -> str:
    """FORECAST -> "forecast"; "" when unspecified."""
    return "" if value == pb.MODEL_TYPE_UNSPECIFIED else pb.ModelType.Name(value).lower()


def model_type_pb(name: str) -> int:
    return pb.ModelType.Value(name.upper()) if name else pb.MODEL_TYPE_UNSPECIFIED


def priority_from_pb(value: int, *, default: records.Priority | None = records.Priority.NORMAL) -> records.Priority:
    if value == pb.PRIORITY_UNSPECIFIED:
        if default is None:
            raise RequestError("priority", "is required: one of critical, high, normal, low")
        return default
    try:
        return records.Priority(pb.Priority.Name(value))
    except ValueError:
        raise RequestError("priority", f"unknown priority value {value}") from None


def status_from_pb(value: int) -> records.JobStatus | None:
    if value == pb.JOB_STATUS_UNSPECIFIED:
        return None
    try:
        return records.JobStatus(pb.JobStatus.Name(value))
    except ValueError:
        raise RequestError("status", f"unknown status value {value}") from None


def parse_uuid(value: str, field: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise RequestError(field, f"{value!r} is not {what} (a UUID)") from None


def parse_job_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "job_id", "a job id")


def job_to_pb(job: records.Job) -> pb.TrainingJob:
    msg = pb.TrainingJob(
        job_id=str(job.job_id),
        tenant_id=job.tenant_id,
        model_type=model_type_pb(job.model_type),
        status=STATUS_TO_PB[job.status],
        priority=PRIORITY_TO_PB[job.priority],
        progress=job.progress,
        current_step=job.current_step,
        metrics=dict(job.metrics),
        attempt=job.attempt,
        config=dict_to_config(job.config),
        metadata=dict(job.metadata),
        model_version=job.model_version or 0,
        request_id=job.request_id or "",
        created_at=_ts(job.created_at),
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
        updated_at=_ts(job.updated_at),
        next_retry_at=_ts(job.retry_at),
    )
    if job.error:
        msg.error.CopyFrom(pb.JobError(reason=job.error.reason, message=job.error.message, details=dict(job.error.details)))
    return msg


def log_to_pb(line: records.LogLine) -> pb.LogEntry:
    return pb.LogEntry(
        sequence=line.sequence,
        time=_ts(line.time),
        level=LEVEL_TO_PB[line.level],
        step=line.step,
        message=line.message,
        attempt=line.attempt,
    )


def cluster_to_pb(cluster: records.RayCluster) -> pb.RayCluster:
    return pb.RayCluster(
        cluster_id=cluster.cluster_id,
        status=cluster.status,
        num_workers=cluster.num_workers,
        address=cluster.address,
        resources=dict(cluster.resources),
        available_resources=dict(cluster.available_resources),
        nodes=[pb.WorkerNode(node_id=n.node_id, address=n.address, status=n.status, resources=dict(n.resources)) for n in cluster.nodes],
    )


def encode_page_token(cursor: tuple[datetime, uuid.UUID] | None) -> str:
    if cursor is None:
        return ""
    raw = f"{cursor[0].isoformat()}|{cursor[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, job_id = raw.split("|")
        return datetime.fromisoformat(at), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("page_token", "is not a token this service issued (pass next_page_token unchanged)") from None


def model_to_pb(version: records.ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        model_id=str(version.model_id),
        tenant_id=version.tenant_id,
        model_type=model_type_pb(version.model_type),
        version=version.version,
        job_id=str(version.job_id),
        algorithm=version.algorithm,
        features=list(version.features),
        target=version.target,
        training_start=_ts(version.training_start),
        training_end=_ts(version.training_end),
        metrics=dict(version.metrics),
        feature_importance=dict(version.feature_importance),
        artifact_uri=version.artifact_uri,
        config_hash=version.config_hash,
        config=dict_to_config(version.config),
        created_at=_ts(version.created_at),
        deleted_at=_ts(version.deleted_at),
    )


def parse_model_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "model_id", "a model version id")
