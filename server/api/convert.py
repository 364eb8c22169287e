"""Conversions between protobuf messages and the domain: storage's records, the training
spec, and the small domain values (priority, status, model type, file format). The one
module that builds protobuf messages from the domain and reads domain values out of them;
the servicers only pass what it returns along.

Each enum has one explicit table here (domain value <-> proto value); a proto value the
table lacks (a newer client, or a forged number) is a RequestError naming the field.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import pandas as pd
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.errors import RequestError
from storage import records
from storage.features import FileFormat
from trainers import predictions
from trainers import spec as specs
from trainers.errors import Violation, shown
from trainers.features import SERIES

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


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
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


# --- the training config ------------------------------------------------------------------------
def integral(value: Any) -> Any:
    """Struct numbers are doubles; write whole numbers as ints (n_estimators: 100, not 100.0),
    as Envoy's transcoder prints them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A Struct / ListValue / scalar as plain Python (non-finite numbers kept, for the
    checks to name; json_format refuses to serialise them)."""
    if isinstance(value, struct_pb2.Struct):
        return {k: _plain(value[k]) for k in value.keys()}  # noqa: SIM118 - a Struct, not a dict
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: pb.TrainingConfig) -> dict[str, Any]:
    """The config as the guide writes it, for trainers.spec: only the fields that were set,
    snake_case names, the model type's domain name, whole numbers as ints."""
    rest = pb.TrainingConfig()
    rest.CopyFrom(config)
    rest.ClearField("hyperparameters")
    if rest.HasField("tuning"):
        rest.tuning.ClearField("search_space")
    out = json_format.MessageToDict(rest, preserving_proto_field_name=True)
    out.pop("model_type", None)
    model_type = model_type_from_pb(config.model_type, "config.model_type")
    if model_type is not None:
        out["model_type"] = model_type.value
    if config.HasField("hyperparameters"):
        out["hyperparameters"] = integral(_plain(config.hyperparameters))
    if config.HasField("tuning") and config.tuning.HasField("search_space"):
        out.setdefault("tuning", {})["search_space"] = integral(_plain(config.tuning.search_space))
    return out


def config_to_pb(config: Mapping[str, Any], config_hash: str | None = None) -> pb.TrainingConfig:
    """A stored config (the spec's canonical form) as the API shows it. With its
    ``config_hash`` (the SHA-256 of that form), the message is built once and then copied
    (json_format's parser was a sixth of a GetTrainingJob's time)."""
    msg = pb.TrainingConfig()
    if config_hash:
        msg.ParseFromString(_config_bytes(config_hash, config))
        return msg
    data = dict(config)
    model_type = data.pop("model_type", "")
    json_format.ParseDict(data, msg, ignore_unknown_fields=True)
    msg.model_type = model_type_to_pb(model_type)
    return msg


class _ConfigCache(dict[str, bytes]):
    """Serialised TrainingConfig messages by config hash: a stored config never changes, and
    its hash names exactly one canonical form. Bounded: emptied when full."""

    LIMIT = 4096

    def get_or_build(self, config_hash: str, config: Mapping[str, Any]) -> bytes:
        found = self.get(config_hash)
        if found is None:
            if len(self) >= self.LIMIT:
                self.clear()
            found = self[config_hash] = config_to_pb(config).SerializeToString()
        return found


_CONFIGS = _ConfigCache()


def _config_bytes(config_hash: str, config: Mapping[str, Any]) -> bytes:
    return _CONFIGS.get_or_build(config_hash, config)


def validation_to_pb(violations: Sequence[Violation]) -> pb.ValidateTrainingConfigResponse:
    return pb.ValidateTrainingConfigResponse(
        valid=not violations, violations=[pb.FieldViolation(field=v.field, description=v.description) for v in violations]
    )


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


# --- records -> messages -------------------------------------------------------------------------
def job_to_pb(job: records.Job) -> pb.TrainingJob:
    msg = pb.TrainingJob(
        job_id=str(job.job_id),
        tenant_id=job.tenant_id,
        model_type=model_type_to_pb(job.model_type),
        status=STATUSES[job.status],
        priority=PRIORITIES[job.priority],
        progress=job.progress,
        current_step=job.current_step,
        metrics=dict(job.metrics),
        attempt=job.attempt,
        config=config_to_pb(job.config, job.config_hash),
        metadata=dict(job.metadata),
        model_version=job.model_version or 0,
        request_id=job.request_id or "",
        created_at=_ts(job.created_at),
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
        updated_at=_ts(job.updated_at),
        next_retry_at=_ts(job.retry_at),
        schedule_id=str(job.schedule_id) if job.schedule_id else "",
        scheduled_for=_ts(job.scheduled_for),
        mlflow_run_id=job.mlflow_run_id or "",
    )
    if job.error:
        msg.error.CopyFrom(
            pb.JobError(reason=job.error.reason, error=job.error.reason, message=job.error.message, details=dict(job.error.details))
        )
    return msg


def jobs_to_pb(jobs: Sequence[records.Job], cursor: tuple[datetime, uuid.UUID] | None) -> pb.ListTrainingJobsResponse:
    return pb.ListTrainingJobsResponse(jobs=[job_to_pb(j) for j in jobs], next_page_token=encode_page_token(cursor))


def metrics_to_pb(job: records.Job) -> pb.GetTrainingJobMetricsResponse:
    m = job.metrics
    return pb.GetTrainingJobMetricsResponse(job_id=str(job.job_id), metrics=dict(m), **{k: m[k] for k in METRIC_FIELDS if k in m})


def predictions_to_pb(
    job_id: uuid.UUID,
    version: records.ModelVersion,
    kept: predictions.Predictions,
    page: pd.DataFrame,
    *,
    downsampled: bool,
    next_offset: int,
) -> pb.GetPredictionsResponse:
    out = pb.GetPredictionsResponse(
        job_id=str(job_id),
        model_id=str(version.model_id),
        model_version=version.version,
        model_type=model_type_to_pb(version.model_type),
        baseline=kept.baseline,
        total_points=len(kept.frame),
        validation_rows=kept.total_rows,
        downsampled=downsampled,
        next_page_token=encode_offset_token(next_offset),
    )
    if kept.threshold is not None:
        out.threshold = kept.threshold
    stamps = page["timestamp"].to_numpy(dtype="datetime64[ns]").astype("int64")
    values = {name: page[name].to_numpy() for name in ("actual", "predicted", "baseline", "score") if name in page.columns}
    flags = {name: page[name].to_numpy() for name in ("flagged", "label") if name in page.columns}
    series = page[SERIES].to_numpy() if SERIES in page.columns else None
    for i in range(len(page)):
        point = out.points.add()
        point.timestamp.FromNanoseconds(int(stamps[i]))
        for name, column in values.items():
            if column[i] == column[i]:  # NaN: left unset
                setattr(point, name, float(column[i]))
        if "flagged" in flags:
            point.flagged = bool(flags["flagged"][i])
        if "label" in flags:
            point.label = bool(flags["label"][i])
        if series is not None:
            point.series_id = str(series[i])
    return out


def log_to_pb(line: records.LogLine) -> pb.LogEntry:
    return pb.LogEntry(
        sequence=line.sequence,
        time=_ts(line.time),
        level=LEVELS[line.level],
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
        nodes=[
            pb.WorkerNode(node_id=n.node_id, address=n.address, status=n.status, resources=dict(n.resources), in_use=dict(n.in_use))
            for n in cluster.nodes
        ],
    )


def clusters_to_pb(found: Sequence[records.RayCluster]) -> pb.ListRayClustersResponse:
    return pb.ListRayClustersResponse(clusters=[cluster_to_pb(c) for c in found])


def health_to_pb(
    queue: Mapping[str, int] | None, database_error: str | None, cluster: records.RayCluster | None, ray_error: str | None
) -> pb.GetHealthResponse:
    """The health answer: what each component showed (a cluster, or the error it gave)."""
    out = pb.GetHealthResponse()
    if queue is not None:
        out.queue.update(queue)
    out.database.CopyFrom(
        pb.ComponentHealth(status="unavailable", detail=database_error)
        if database_error is not None
        else pb.ComponentHealth(status="ok", detail="PostgreSQL reachable")
    )
    if cluster is not None:
        cpus = cluster.resources.get("CPU", 0)
        detail = f"{cluster.num_workers} node(s), {cpus:g} CPUs"
        out.ray.CopyFrom(pb.ComponentHealth(status="ok" if cluster.num_workers else "down", detail=detail))
    else:
        why = f"Ray cluster DOWN: {ray_error or 'unreachable'}; jobs wait PENDING until it is back"
        out.ray.CopyFrom(pb.ComponentHealth(status="down", detail=why))
    out.status = "ok" if out.database.status == out.ray.status == "ok" else "degraded"
    return out


def import_to_pb(rows: int, table: str, columns: Sequence[str]) -> pb.ImportFeatureDataResponse:
    return pb.ImportFeatureDataResponse(rows_imported=rows, table=table, columns=list(columns))


def model_to_pb(version: records.ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        model_id=str(version.model_id),
        tenant_id=version.tenant_id,
        model_type=model_type_to_pb(version.model_type),
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
        config=config_to_pb(version.config, version.config_hash),
        created_at=_ts(version.created_at),
        deleted_at=_ts(version.deleted_at),
        keep=version.keep,
        mlflow_run_id=version.mlflow_run_id or "",
    )


def models_to_pb(found: Sequence[records.ModelVersion]) -> pb.ListModelVersionsResponse:
    return pb.ListModelVersionsResponse(versions=[model_to_pb(v) for v in found])


def evaluation_to_pb(version: records.ModelVersion, scores: Mapping[str, float]) -> pb.EvaluateModelVersionResponse:
    return pb.EvaluateModelVersionResponse(model_id=str(version.model_id), version=version.version, metrics=dict(scores))


# --- administration ------------------------------------------------------------------------------
def api_key_to_pb(key: records.ApiKey) -> admin_pb.ApiKey:
    return admin_pb.ApiKey(
        key_id=key.key_id,
        tenant_id=key.tenant_id or "",
        admin=key.admin,
        name=key.name,
        created_at=_ts(key.created_at),
        revoked_at=_ts(key.revoked_at),
    )


def quota_to_pb(quota: records.TenantQuota) -> admin_pb.TenantQuota:
    return admin_pb.TenantQuota(
        tenant_id=quota.tenant_id,
        max_queued_jobs=quota.max_queued_jobs,
        max_running_jobs=quota.max_running_jobs or 0,
        max_priority=PRIORITIES[quota.max_priority],
        max_import_bytes=quota.max_import_bytes,
        updated_at=_ts(quota.updated_at),
        keep_versions=quota.keep_versions or 0,
    )


def quota_changes(request: admin_pb.UpdateTenantQuotaRequest) -> dict[str, Any]:
    """The quotas an update sets, checked (each a RequestError naming the field)."""
    changes: dict[str, Any] = {}
    for name in ("max_queued_jobs", "max_running_jobs", "max_import_bytes", "keep_versions"):
        if request.HasField(name):
            value = getattr(request, name)
            if value < 0:
                raise RequestError(name, "must not be negative")
            changes[name] = value
    for name in ("max_running_jobs", "keep_versions"):  # 0: no limit
        if changes.get(name) == 0:
            changes[name] = None
    if request.max_priority != pb.PRIORITY_UNSPECIFIED:
        changes["max_priority"] = priority_from_pb(request.max_priority)
    return changes


# --- operations: schedules, alerts, degradation checks ----------------------------------------
ACTIONS: Mapping[str, int] = {"train": ops_pb.TRAIN, "evaluate": ops_pb.EVALUATE, "train_and_evaluate": ops_pb.TRAIN_AND_EVALUATE}
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}


def degradation_policy(policy: ops_pb.DegradationPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if policy.window:
        out["window"] = policy.window
    for name in ("max_mae_increase", "max_skill_drop"):
        if policy.HasField(name):
            value = getattr(policy, name)
            if not (0 <= value <= 100):
                raise RequestError(f"degradation.{name}", "must be between 0 and 100")
            out[name] = value
    return out


def check_to_pb(check: records.DegradationCheck) -> ops_pb.DegradationCheck:
    return ops_pb.DegradationCheck(
        check_id=str(check.check_id),
        model_id=str(check.model_id) if check.model_id else "",
        status=check.status,
        window_start=_ts(check.window_start),
        window_end=_ts(check.window_end),
        metrics=dict(check.metrics),
        baseline=dict(check.baseline),
        degraded=bool(check.degraded),
        message=check.message,
        created_at=_ts(check.created_at),
        finished_at=_ts(check.finished_at),
    )


def schedule_to_pb(
    schedule: records.Schedule,
    recent: Sequence[records.ScheduledJob] = (),
    checks: Sequence[records.DegradationCheck] = (),
) -> ops_pb.Schedule:
    policy = schedule.degradation or {}
    msg = ops_pb.Schedule(
        schedule_id=str(schedule.schedule_id),
        tenant_id=schedule.tenant_id,
        name=schedule.name,
        schedule=schedule.cron,
        timezone=schedule.timezone,
        window=schedule.window or "",
        action=ACTIONS[schedule.action],  # type: ignore[arg-type]
        model_type=model_type_to_pb(schedule.model_type),
        priority=PRIORITIES[schedule.priority],
        config=config_to_pb(schedule.config),
        metadata=dict(schedule.metadata),
        paused=schedule.paused,
        next_fire_at=_ts(schedule.next_fire_at),
        last_fired_at=_ts(schedule.last_fired_at),
        missed_firings=schedule.missed_firings,
        recent_jobs=[
            ops_pb.ScheduledJob(
                job_id=str(j.job_id), status=STATUSES[j.status], scheduled_for=_ts(j.scheduled_for), created_at=_ts(j.created_at)
            )
            for j in recent
        ],
        recent_checks=[check_to_pb(c) for c in checks],
        created_at=_ts(schedule.created_at),
        updated_at=_ts(schedule.updated_at),
    )
    if policy:
        msg.degradation.window = str(policy.get("window", ""))
        for name in ("max_mae_increase", "max_skill_drop"):
            if name in policy:
                setattr(msg.degradation, name, float(policy[name]))
    return msg


def target_to_pb(target: records.AlertTarget, *, with_secret: bool = False) -> ops_pb.AlertTarget:
    return ops_pb.AlertTarget(
        target_id=str(target.target_id),
        tenant_id=target.tenant_id,
        url=target.url,
        events=list(target.events),
        secret=target.secret if with_secret else "",
        created_at=_ts(target.created_at),
    )


def delivery_to_pb(delivery: records.AlertDelivery) -> ops_pb.AlertDelivery:
    return ops_pb.AlertDelivery(
        delivery_id=delivery.delivery_id,
        target_id=str(delivery.target_id),
        event=delivery.event,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error or "",
        response_status=delivery.response_status or 0,
        body=json.dumps(delivery.body, sort_keys=True, default=str),
        created_at=_ts(delivery.created_at),
        delivered_at=_ts(delivery.delivered_at),
    )
