"""TrainingService: gRPC in and out only. Validation lives in trainers.spec, conversion in
server.convert, data access in storage/; each handler owns its transaction."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pandas as pd
import pyarrow.parquet as pq

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from server import convert
from server.errors import InvalidState, RequestError
from server.events import wait
from server.worker import EvaluatePayload
from storage import db, features, jobs, logs, models
from storage.records import NewJob
from trainers import spec as specs
from trainers.errors import ConfigValidationError, Violation

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
BACKSTOP_SECONDS = 1.0  # streams re-read at least this often, even without a notification
MAX_IMPORT_BYTES = 2 * 1024**3


def _settled(job) -> bool:
    """Final, and no automatic retry planned: streams end here."""
    return job.status.is_terminal() and job.retry_at is None


def _required(value: str, field: str, *, max_len: int = 128) -> str:
    value = value.strip()
    if not value:
        raise RequestError(field, "is required")
    if len(value) > max_len:
        raise RequestError(field, f"is longer than {max_len} characters")
    return value


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def engine(self):
        return self.app.engine

    # --- jobs -----------------------------------------------------------------------------
    async def CreateTrainingJob(self, request: pb.CreateTrainingJobRequest, context) -> pb.TrainingJob:
        tenant_id = _required(request.tenant_id, "tenant_id")
        model_type = convert.model_type_name(request.model_type)
        if not model_type:
            raise RequestError("model_type", "is required: forecast or anomaly")
        if not request.HasField("config"):
            raise RequestError("config", "is required")
        if len(request.request_id) > 128:
            raise RequestError("request_id", "is longer than 128 characters")
        config = convert.config_to_dict(request.config)
        spec = specs.build(config, model_type=model_type)
        new = NewJob(
            tenant_id=tenant_id,
            model_type=model_type,
            algorithm=spec.algorithm,
            priority=convert.priority_from_pb(request.priority),
            config=specs.effective_config(config, spec),
            metadata=dict(request.metadata),
            request_id=request.request_id or None,
        )
        async with db.transaction(self.engine) as conn:
            job, created = await jobs.create(conn, new)
        if not created:
            log.info("request_id %s of %s already created job %s", new.request_id, tenant_id, job.job_id)
        return convert.job_to_pb(job)

    async def GetTrainingJob(self, request, context) -> pb.TrainingJob:
        job_id = convert.parse_job_id(request.job_id)
        async with db.transaction(self.engine) as conn:
            job = await jobs.get(conn, job_id)
        return convert.job_to_pb(job)

    async def ListTrainingJobs(self, request, context) -> pb.ListTrainingJobsResponse:
        if request.page_size < 0:
            raise RequestError("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        async with db.transaction(self.engine) as conn:
            found, cursor = await jobs.list_jobs(
                conn,
                tenant_id=request.tenant_id or None,
                status=convert.status_from_pb(request.status),
                model_type=convert.model_type_name(request.model_type) or None,
                limit=size,
                before=convert.decode_page_token(request.page_token),
            )
        return pb.ListTrainingJobsResponse(jobs=[convert.job_to_pb(j) for j in found], next_page_token=convert.encode_page_token(cursor))

    async def CancelTrainingJob(self, request, context) -> pb.TrainingJob:
        job_id = convert.parse_job_id(request.job_id)
        async with db.transaction(self.engine) as conn:
            job = await jobs.cancel(conn, job_id)
        # A running attempt's Ray task sees within a second that it is over and stops.
        return convert.job_to_pb(job)

    async def RetryTrainingJob(self, request, context) -> pb.TrainingJob:
        job_id = convert.parse_job_id(request.job_id)
        async with db.transaction(self.engine) as conn:
            job = await jobs.retry(conn, job_id)
        return convert.job_to_pb(job)

    async def UpdateTrainingJob(self, request, context) -> pb.TrainingJob:
        job_id = convert.parse_job_id(request.job_id)
        priority = convert.priority_from_pb(request.priority, default=None)
        async with db.transaction(self.engine) as conn:
            job = await jobs.update_priority(conn, job_id, priority)
        return convert.job_to_pb(job)

    async def GetTrainingJobMetrics(self, request, context) -> pb.GetTrainingJobMetricsResponse:
        job_id = convert.parse_job_id(request.job_id)
        async with db.transaction(self.engine) as conn:
            job = await jobs.get(conn, job_id)
        m = job.metrics
        named = ("mae", "rmse", "mape", "r2_score", "training_duration_seconds", "training_data_size")
        return pb.GetTrainingJobMetricsResponse(job_id=str(job.job_id), metrics=dict(m), **{k: m[k] for k in named if k in m})

    # --- streams --------------------------------------------------------------------------
    async def StreamTrainingJobLogs(self, request, context) -> AsyncIterator[pb.LogEntry]:
        job_id = convert.parse_job_id(request.job_id)
        follow = request.follow if request.HasField("follow") else True
        after = max(0, request.after_sequence)
        async with self.app.events.subscribe(str(job_id)) as changed:
            while True:
                changed.clear()
                async with db.transaction(self.engine) as conn:
                    job = await jobs.get(conn, job_id)  # read the state first: lines written with a final state are then seen
                    lines = await logs.after(conn, job_id, after)
                for line in lines:
                    yield convert.log_to_pb(line)
                    after = line.sequence
                if len(lines) == 1000:
                    continue  # more backlog
                if not follow or _settled(job):
                    return
                await wait(changed, BACKSTOP_SECONDS)

    async def WatchTrainingJob(self, request, context) -> AsyncIterator[pb.TrainingJob]:
        job_id = convert.parse_job_id(request.job_id)
        last = None
        async with self.app.events.subscribe(str(job_id)) as changed:
            while True:
                changed.clear()
                async with db.transaction(self.engine) as conn:
                    job = await jobs.get(conn, job_id)
                key = (job.status, job.progress, job.current_step, tuple(sorted(job.metrics.items())), job.attempt, job.priority)
                if key != last:
                    last = key
                    yield convert.job_to_pb(job)
                if _settled(job):
                    return
                await wait(changed, BACKSTOP_SECONDS)

    # --- config, cluster, health ----------------------------------------------------------
    async def ValidateTrainingConfig(self, request, context) -> pb.ValidateTrainingConfigResponse:
        violations = specs.validate(convert.config_to_dict(request.config))
        return pb.ValidateTrainingConfigResponse(
            valid=not violations,
            violations=[pb.FieldViolation(field=v.field, description=v.description) for v in violations],
        )

    async def ListRayClusters(self, request, context) -> pb.ListRayClustersResponse:
        found = await self.app.refresh_cluster()
        return pb.ListRayClustersResponse(clusters=[convert.cluster_to_pb(c) for c in found])

    async def GetHealth(self, request, context) -> pb.GetHealthResponse:
        out = pb.GetHealthResponse()
        try:
            async with db.transaction(self.engine) as conn:
                out.queue.update(await jobs.count_by_status(conn))
            out.database.CopyFrom(pb.ComponentHealth(status="ok", detail="PostgreSQL reachable"))
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            out.database.CopyFrom(pb.ComponentHealth(status="unavailable", detail=str(exc)))
        try:
            cluster = await asyncio.to_thread(self.app.executor.cluster)
            out.ray.CopyFrom(
                pb.ComponentHealth(
                    status="ok" if cluster.num_workers else "unavailable",
                    detail=f"{cluster.num_workers} node(s), {cluster.resources.get('CPU', 0):g} CPUs",
                )
            )
        except Exception as exc:  # noqa: BLE001
            out.ray.CopyFrom(pb.ComponentHealth(status="unavailable", detail=str(exc)))
        out.status = "ok" if out.database.status == out.ray.status == "ok" else "degraded"
        return out

    # --- data in --------------------------------------------------------------------------
    async def ImportFeatureData(self, request_iterator, context) -> pb.ImportFeatureDataResponse:
        buf = io.BytesIO()
        first = None
        async for chunk in request_iterator:
            if first is None:
                first = chunk
            buf.write(chunk.data)
            if buf.tell() > MAX_IMPORT_BYTES:
                raise RequestError("data", f"the file is larger than {MAX_IMPORT_BYTES // 1024**2} MiB; split it")
        if first is None:
            raise RequestError("data", "no data was sent")
        tenant_id = _required(first.tenant_id, "tenant_id")
        table = _required(first.table, "table", max_len=63)
        frame = await asyncio.to_thread(_read_table, buf.getvalue(), first.format)
        async with db.transaction(self.engine) as conn:
            rows, columns = await features.import_frame(conn, tenant_id, table, frame)
        log.info("imported %d rows into features.%s for %s", rows, table, tenant_id)
        return pb.ImportFeatureDataResponse(rows_imported=rows, table=table, columns=columns)

    # --- model registry ------------------------------------------------------------------
    async def ListModelVersions(self, request, context) -> pb.ListModelVersionsResponse:
        tenant_id = _required(request.tenant_id, "tenant_id")
        async with db.transaction(self.engine) as conn:
            found = await models.list_versions(
                conn, tenant_id, convert.model_type_name(request.model_type) or None, include_deleted=request.include_deleted
            )
        return pb.ListModelVersionsResponse(versions=[convert.model_to_pb(v) for v in found])

    async def GetModelVersion(self, request, context) -> pb.ModelVersion:
        model_id = convert.parse_model_id(request.model_id)
        async with db.transaction(self.engine) as conn:
            version = await models.get(conn, model_id, request.tenant_id or None)
        return convert.model_to_pb(version)

    async def EvaluateModelVersion(self, request, context) -> pb.EvaluateModelVersionResponse:
        model_id = convert.parse_model_id(request.model_id)
        async with db.transaction(self.engine) as conn:
            version = await models.get(conn, model_id, request.tenant_id or None)
        if version.deleted_at is not None:
            raise InvalidState(f"model version {version.version} was deleted; its artifact is gone", details={"model_id": str(model_id)})
        window = {**version.config, "training_start": request.evaluation_start, "training_end": request.evaluation_end}
        try:
            spec = specs.build(window, model_type=version.model_type)
        except ConfigValidationError as exc:
            renamed = [Violation(v.field.replace("training_", "evaluation_"), v.description) for v in exc.violations]
            raise ConfigValidationError(renamed, message="Invalid evaluation window") from None
        payload = EvaluatePayload(
            tenant_id=version.tenant_id,
            spec=spec,
            algorithm=version.algorithm,
            artifact_path=urlparse(version.artifact_uri).path,
            trained_metrics=version.metrics,
            database_url=self.app.database_url,
        )
        scores = await self.app.executor.evaluate(payload)
        return pb.EvaluateModelVersionResponse(model_id=str(version.model_id), version=version.version, metrics=scores)

    async def DeleteModelVersion(self, request, context) -> pb.ModelVersion:
        model_id = convert.parse_model_id(request.model_id)
        async with db.transaction(self.engine) as conn:
            version = await models.mark_deleted(conn, model_id, request.tenant_id or None)
        artifact = Path(urlparse(version.artifact_uri).path)
        await asyncio.to_thread(shutil.rmtree, artifact.parent, True)
        log.info("model version %s (%s v%d) deleted; artifact %s removed", model_id, version.tenant_id, version.version, artifact)
        return convert.model_to_pb(version)


def _read_table(data: bytes, fmt: int) -> pd.DataFrame:
    if not data:
        raise RequestError("data", "the file is empty")
    if fmt == pb.DATA_FORMAT_UNSPECIFIED:
        fmt = pb.PARQUET if data[:4] == b"PAR1" else pb.CSV
    try:
        if fmt == pb.PARQUET:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        kind = "Parquet" if fmt == pb.PARQUET else "CSV"
        raise RequestError("data", f"cannot read the file as {kind}: {exc}") from exc
