"""TrainingService (training_service.proto): the training config (proto <-> the dict the
spec is built from, and the stored canonical form back), jobs, logs, metrics, predictions,
model versions, clusters, health and imports as messages."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from google.protobuf import json_format, struct_pb2

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.convert.common import (
    LEVELS,
    METRIC_FIELDS,
    PRIORITIES,
    STATUSES,
    as_timestamp,
    encode_offset_token,
    encode_page_token,
    model_type_from_pb,
    model_type_to_pb,
)
from server.api.errors import RequestError
from storage import features, records
from trainers import intervals, predictions
from trainers.errors import Violation, shown
from trainers.features import SERIES


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
        created_at=as_timestamp(job.created_at),
        started_at=as_timestamp(job.started_at),
        finished_at=as_timestamp(job.finished_at),
        updated_at=as_timestamp(job.updated_at),
        next_retry_at=as_timestamp(job.retry_at),
        schedule_id=str(job.schedule_id) if job.schedule_id else "",
        scheduled_for=as_timestamp(job.scheduled_for),
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
    bands = {level: page[c].to_numpy() for c, level in intervals.columns(page.columns).items()}
    for i in range(len(page)):
        point = out.points.add()
        point.timestamp.FromNanoseconds(int(stamps[i]))
        for level, column in bands.items():
            if column[i] == column[i]:
                point.quantiles[level] = float(column[i])
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
        time=as_timestamp(line.time),
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


def import_to_pb(done: features.Imported, table: str, rule: str) -> pb.ImportFeatureDataResponse:
    return pb.ImportFeatureDataResponse(
        rows_imported=done.rows, table=table, columns=list(done.columns), duplicates_merged=done.duplicates, duplicates=rule
    )


def duplicates_rule(value: str) -> features.Duplicates:
    """An import's duplicates rule; default refuse."""
    rule = (value or "refuse").strip().lower()
    if rule not in features.DUPLICATE_RULES:
        raise RequestError("duplicates", f"{shown(value)} is not one of {', '.join(features.DUPLICATE_RULES)}")
    return rule


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
        training_start=as_timestamp(version.training_start),
        training_end=as_timestamp(version.training_end),
        metrics=dict(version.metrics),
        feature_importance=dict(version.feature_importance),
        artifact_uri=version.artifact_uri,
        config_hash=version.config_hash,
        config=config_to_pb(version.config, version.config_hash),
        created_at=as_timestamp(version.created_at),
        deleted_at=as_timestamp(version.deleted_at),
        keep=version.keep,
        mlflow_run_id=version.mlflow_run_id or "",
        aliases=list(version.aliases),
    )


def models_to_pb(found: Sequence[records.ModelVersion]) -> pb.ListModelVersionsResponse:
    return pb.ListModelVersionsResponse(versions=[model_to_pb(v) for v in found])


def evaluation_to_pb(version: records.ModelVersion, scores: Mapping[str, float]) -> pb.EvaluateModelVersionResponse:
    return pb.EvaluateModelVersionResponse(model_id=str(version.model_id), version=version.version, metrics=dict(scores))
