"""TrainingService: gRPC in and out only. Each handler reads its request into domain values
(server.api.convert, trainers.spec), calls storage/ or job execution in a transaction it
owns, and answers what convert builds. Its collaborators are given to it explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias

import grpc
from google.protobuf import json_format

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from server.api import auth, convert
from server.api.errors import InvalidState, RequestError, answer_rest_with_status
from server.api.events import EventHub, wait
from server.api.serving import ModelServing
from server.api.streams import StreamGate
from server.execution.artifacts import ArtifactPathError, ArtifactStore
from server.execution.clusters import ClusterMonitor
from server.execution.evaluation import ModelEvaluator
from server.execution.forecasts import ModelServer
from storage import db, features, jobs, logs, models, tenants
from storage.errors import StorageError
from storage.records import Job, JobStatus, ModelVersion, NewJob, RayCluster
from storage.tenancy import Scope
from trainers import predictions
from trainers import spec as specs
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_POINTS = 50_000  # GetPredictions: points in one answer (a page, or a thinned window)
DEFAULT_POINTS_PAGE = 5000
BACKSTOP_SECONDS = 1.0  # streams re-read at least this often, even without a notification
SPOOL_BYTES = 8 * 1024**2  # an import's bytes beyond this go to a temporary file, not memory
Context: TypeAlias = grpc.aio.ServicerContext


def _settled(job: Job) -> bool:
    """Final, and no automatic retry planned: streams end here."""
    return job.status.is_terminal() and job.retry_at is None


class TrainingServicer(ModelServing, pb_grpc.TrainingServiceServicer):
    def __init__(
        self,
        *,
        engine: db.Engine,
        events: EventHub,
        evaluator: ModelEvaluator,
        models_in_use: ModelServer,
        artifacts: ArtifactStore,
        clusters: ClusterMonitor,
        max_runtime_cap: int = 604800,
        streams: StreamGate | None = None,
    ) -> None:
        self.max_runtime_cap = max_runtime_cap
        self.streams = streams or StreamGate()
        self.engine = engine
        self.events = events
        self.evaluator = evaluator
        self.models_in_use = models_in_use
        self.artifacts = artifacts
        self.clusters = clusters

    # --- jobs -----------------------------------------------------------------------------
    async def CreateTrainingJob(self, request: pb.CreateTrainingJobRequest, context: Context) -> pb.TrainingJob:
        scope = auth.scope_for(request.tenant_id, required=True)
        tenant_id = scope.single()
        model_type = convert.model_type_from_pb(request.model_type)
        if model_type is None:
            raise RequestError("model_type", "is required: forecast or anomaly")
        if not request.HasField("config"):
            raise RequestError("config", "is required")
        request_id = convert.checked_text(request.request_id, "request_id", max_len=128)
        metadata = convert.metadata(request.metadata)
        config = convert.config_to_dict(request.config)
        await self.clusters.check_fits(specs.worker_request(config))  # ResourceError first: what no config change fixes
        spec = specs.build(config, model_type=model_type)
        if spec.max_runtime_seconds is not None and spec.max_runtime_seconds > self.max_runtime_cap:
            raise RequestError("max_runtime_seconds", f"must be at most {self.max_runtime_cap} s (this server's cap)")
        new = NewJob(
            tenant_id=tenant_id,
            model_type=spec.model_type.value,
            algorithm=spec.algorithm,
            priority=convert.priority_from_pb(request.priority),
            config=spec.to_dict(),
            config_hash=spec.config_hash,
            metadata=metadata,
            request_id=request_id or None,
        )
        async with db.transaction(self.engine, scope) as conn:
            job, created = await jobs.create(conn, new)
        if not created:
            log.info("request_id %s already created this job", new.request_id, extra={"job_id": str(job.job_id), "tenant_id": tenant_id})
        return convert.job_to_pb(job)

    async def _on_job(self, job_id: str, operation: Callable[[db.Connection, uuid.UUID], Awaitable[Job]]) -> pb.TrainingJob:
        """Parse the id, run one job operation in a transaction, answer the job."""
        parsed = convert.parse_job_id(job_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            job = await operation(conn, parsed)
        return convert.job_to_pb(job)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest, context: Context) -> pb.TrainingJob:
        return convert.job_to_pb(await self._get_job(request.job_id))

    async def ListTrainingJobs(self, request: pb.ListTrainingJobsRequest, context: Context) -> pb.ListTrainingJobsResponse:
        if request.page_size < 0:
            raise RequestError("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        model_type = convert.model_type_from_pb(request.model_type)
        scope = auth.scope_for(request.tenant_id)
        async with db.single(self.engine, scope) as conn:  # one statement: no transaction needed
            found, cursor = await jobs.list_jobs(
                conn,
                status=convert.status_from_pb(request.status),
                model_type=model_type.value if model_type else None,
                schedule_id=convert.parse_uuid(request.schedule_id, "schedule_id", "a schedule id") if request.schedule_id else None,
                limit=size,
                before=convert.decode_page_token(request.page_token),
            )
        return convert.jobs_to_pb(found, cursor)

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest, context: Context) -> pb.TrainingJob:
        # A running attempt's Ray task sees within a second that it is over and stops.
        return await self._on_job(request.job_id, jobs.cancel)

    async def RetryTrainingJob(self, request: pb.RetryTrainingJobRequest, context: Context) -> pb.TrainingJob:
        return await self._on_job(request.job_id, jobs.retry)

    async def UpdateTrainingJob(self, request: pb.UpdateTrainingJobRequest, context: Context) -> pb.TrainingJob:
        convert.parse_job_id(request.job_id)  # the id's error first, as before the priority's
        priority = convert.priority_from_pb(request.priority, default=None)
        return await self._on_job(request.job_id, lambda conn, job_id: jobs.update_priority(conn, job_id, priority))

    async def GetTrainingJobMetrics(self, request: pb.GetTrainingJobMetricsRequest, context: Context) -> pb.GetTrainingJobMetricsResponse:
        return convert.metrics_to_pb(await self._get_job(request.job_id))

    async def GetPredictions(self, request: pb.GetPredictionsRequest, context: Context) -> pb.GetPredictionsResponse:
        for name in ("page_size", "max_points"):
            value = getattr(request, name)
            if not 0 <= value <= MAX_POINTS:
                raise RequestError(name, f"must be between 0 and {MAX_POINTS} (0: the default)")
        offset = convert.decode_offset_token(request.page_token)
        job_id = convert.parse_job_id(request.job_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            job = await jobs.get(conn, job_id)
            version = await models.of_job(conn, job_id)
        if job.status != JobStatus.COMPLETED or version is None:
            raise InvalidState(
                f"job {job_id} is {job.status.value}: its predictions are kept when it has COMPLETED",
                details={"job_id": str(job_id), "status": job.status.value},
            )
        if version.deleted_at is not None:
            raise InvalidState(
                f"model version {version.version} was deleted; its predictions went with its artifact",
                details={"model_id": str(version.model_id)},
            )
        try:
            path = self.artifacts.beside_model(version.artifact_uri, predictions.FILE_NAME)
            kept = await asyncio.to_thread(predictions.read, path)
        except (FileNotFoundError, ArtifactPathError):
            raise InvalidState(
                f"model version {version.version} has no kept predictions (trained before they were kept): retrain to get them",
                details={"model_id": str(version.model_id)},
            ) from None
        frame = kept.frame
        if request.max_points:
            page = predictions.downsample(frame, request.max_points)
            return convert.predictions_to_pb(job_id, version, kept, page, downsampled=len(page) < len(frame), next_offset=0)
        size = request.page_size or DEFAULT_POINTS_PAGE
        page = frame.iloc[offset : offset + size]
        more = offset + size if offset + size < len(frame) else 0
        return convert.predictions_to_pb(job_id, version, kept, page, downsampled=False, next_offset=more)

    async def _get_job(self, job_id: str) -> Job:
        parsed = convert.parse_job_id(job_id)
        async with db.single(self.engine, auth.scope_for("")) as conn:  # one statement: no transaction needed
            return await jobs.get(conn, parsed)

    # --- streams --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _stream_place(self, job_id: uuid.UUID, scope: Scope) -> AsyncIterator[None]:
        """A place among the open streams of the job's tenant and of the caller's key
        (server/api/streams.py); JobNotFound first, as before, for a job the caller cannot see."""
        async with db.transaction(self.engine, scope) as conn:
            job = await jobs.get(conn, job_id)
            quota = await tenants.get(conn, job.tenant_id)  # the caller's scope is the job's tenant, or every tenant
        principal = auth.current()
        with self.streams.hold(job.tenant_id, None if principal.admin else principal.key_id, quota.max_open_streams):
            yield

    async def StreamTrainingJobLogs(self, request: pb.StreamTrainingJobLogsRequest, context: Context) -> AsyncIterator[pb.LogEntry]:
        job_id = convert.parse_job_id(request.job_id)
        scope = auth.scope_for("")
        follow = request.follow if request.HasField("follow") else True
        after = max(0, request.after_sequence)
        async with self._stream_place(job_id, scope), self.events.subscribe(str(job_id)) as changed:
            while True:
                changed.clear()
                async with db.transaction(self.engine, scope) as conn:
                    job = await jobs.get(conn, job_id)  # read the state first: lines written with a final state are then seen
                    lines = await logs.after(conn, job_id, after)
                for line in lines:
                    yield convert.log_to_pb(line)
                    after = line.sequence
                if len(lines) == logs.PAGE:
                    continue  # a full page: more backlog
                if not follow or _settled(job):
                    return
                await wait(changed, BACKSTOP_SECONDS)

    async def WatchTrainingJob(self, request: pb.WatchTrainingJobRequest, context: Context) -> AsyncIterator[pb.TrainingJob]:
        job_id = convert.parse_job_id(request.job_id)
        scope = auth.scope_for("")
        last = None
        async with self._stream_place(job_id, scope), self.events.subscribe(str(job_id)) as changed:
            while True:
                changed.clear()
                async with db.transaction(self.engine, scope) as conn:
                    job = await jobs.get(conn, job_id)
                key = (job.status, job.progress, job.current_step, tuple(sorted(job.metrics.items())), job.attempt, job.priority)
                if key != last:
                    last = key
                    yield convert.job_to_pb(job)
                if _settled(job):
                    return
                await wait(changed, BACKSTOP_SECONDS)

    # --- config, cluster, health ----------------------------------------------------------
    async def ValidateTrainingConfig(
        self, request: pb.ValidateTrainingConfigRequest, context: Context
    ) -> pb.ValidateTrainingConfigResponse:
        config = convert.config_to_dict(request.config)
        await self.clusters.check_fits(specs.worker_request(config))
        return convert.validation_to_pb(specs.validate(config))

    async def ListRayClusters(self, request: pb.ListRayClustersRequest, context: Context) -> pb.ListRayClustersResponse:
        auth.scope_for("")  # any authenticated caller
        return convert.clusters_to_pb(await self.clusters.refresh())

    async def GetHealth(self, request: pb.GetHealthRequest, context: Context) -> pb.GetHealthResponse:
        queue: dict[str, int] | None = None
        database_error = ray_error = None
        cluster: RayCluster | None = None
        caller = auth.current()
        try:
            if caller.key_id is None and not caller.open:  # no key: whether the database answers, no counts
                await db.ping(self.engine)
                queue = {}
            else:
                async with db.transaction(self.engine, auth.scope_for("")) as conn:
                    queue = await jobs.count_by_status(conn)
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            database_error = "unavailable" if isinstance(exc, StorageError) else type(exc).__name__
            log.warning("health: database check failed: %s", exc)
        try:
            cluster = await self.clusters.current()
        except Exception as exc:  # noqa: BLE001
            ray_error = "unavailable"
            log.warning("health: Ray check failed: %s", exc)
        health = convert.health_to_pb(queue, database_error, cluster, ray_error)
        if health.status != "ok":
            # Readiness a probe can act on: over REST, /health answers 503 (with the same body)
            # while the database or Ray is down; gRPC callers read ``status``.
            body = json_format.MessageToJson(
                health, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
            )
            await answer_rest_with_status(context, grpc.StatusCode.UNAVAILABLE, body, f"not ready: {health.status}")
        return health

    # --- data in --------------------------------------------------------------------------
    async def ImportFeatureData(
        self, request_iterator: AsyncIterator[pb.ImportFeatureDataRequest], context: Context
    ) -> pb.ImportFeatureDataResponse:
        """The file is spooled to a temporary file as it arrives (memory holds at most
        SPOOL_BYTES of it), within the tenant's max_import_bytes; then read and written in
        chunks of features.CHUNK_ROWS rows, in one transaction: all rows or none."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            first = None
            limit = 0
            async for chunk in request_iterator:
                if first is None:
                    first = chunk
                    scope = auth.scope_for(first.tenant_id, required=True)
                    table = convert.checked_text(first.table, "table", max_len=63, required=True)
                    async with db.transaction(self.engine, scope) as conn:
                        limit = (await tenants.get(conn, scope.single())).max_import_bytes
                spool.write(chunk.data)
                tenants.check_import_size(scope.single(), limit, spool.tell())
            if first is None:
                raise RequestError("data", "no data was sent")
            spool.seek(0)
            chunks = features.iter_file(spool, convert.file_format_from_pb(first.format))
            rule = convert.duplicates_rule(first.duplicates)
            async with db.transaction(self.engine, scope) as conn:
                load = features.FileImport(conn, table, rule)
                await load.add_all(chunks)
                done = await load.finish()
        merged = f"; {done.duplicates} rows repeating a timestamp merged ({rule})" if done.duplicates else ""
        log.info("imported %d rows into features.%s%s", done.rows, table, merged, extra={"tenant_id": scope.tenant_id})
        return convert.import_to_pb(done, table, rule)

    # --- model registry ------------------------------------------------------------------
    async def ListModelVersions(self, request: pb.ListModelVersionsRequest, context: Context) -> pb.ListModelVersionsResponse:
        scope = auth.scope_for(request.tenant_id, required=auth.current().open)
        model_type = convert.model_type_from_pb(request.model_type)
        async with db.transaction(self.engine, scope) as conn:
            found = await models.list_versions(conn, model_type.value if model_type else None, include_deleted=request.include_deleted)
        return convert.models_to_pb(found)

    async def _model(self, model_id: str, tenant_id: str) -> ModelVersion:
        parsed = convert.parse_model_id(model_id)
        async with db.transaction(self.engine, auth.scope_for(tenant_id)) as conn:
            return await models.get(conn, parsed)

    async def GetModelVersion(self, request: pb.GetModelVersionRequest, context: Context) -> pb.ModelVersion:
        version = await self._model(request.model_id, request.tenant_id)
        return convert.model_to_pb(version)

    async def EvaluateModelVersion(self, request: pb.EvaluateModelVersionRequest, context: Context) -> pb.EvaluateModelVersionResponse:
        version = await self._model(request.model_id, request.tenant_id)
        if version.deleted_at is not None:
            raise InvalidState(
                f"model version {version.version} was deleted; its artifact is gone", details={"model_id": str(version.model_id)}
            )
        start, end = specs.parse_window(
            request.evaluation_start,
            request.evaluation_end,
            names=("evaluation_start", "evaluation_end"),
            message="Invalid evaluation window",
        )
        spec = TrainingSpec.from_dict(version.config, model_type=version.model_type).with_window(start, end)
        scores = await self.evaluator.evaluate(version, spec)
        return convert.evaluation_to_pb(version, scores)

    async def UpdateModelVersion(self, request: pb.UpdateModelVersionRequest, context: Context) -> pb.ModelVersion:
        model_id = convert.parse_model_id(request.model_id)
        if not request.HasField("keep"):
            raise RequestError("keep", "is required: true keeps the version from the retention sweep, false lets it go")
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id)) as conn:
            version = await models.set_keep(conn, model_id, request.keep)
        return convert.model_to_pb(version)

    async def DeleteModelVersion(self, request: pb.DeleteModelVersionRequest, context: Context) -> pb.ModelVersion:
        model_id = convert.parse_model_id(request.model_id)
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id)) as conn:
            version = await models.mark_deleted(conn, model_id)
        try:
            artifact = await asyncio.to_thread(self.artifacts.remove_version, version.artifact_uri)
            log.info(
                "model version %s (v%d) deleted; artifact %s removed",
                model_id,
                version.version,
                artifact,
                extra={"tenant_id": version.tenant_id},
            )
        except ArtifactPathError:
            log.warning(
                "model version %s (v%d) deleted; its artifact %s is outside the artifact root and was left alone",
                model_id,
                version.version,
                version.artifact_uri,
                extra={"tenant_id": version.tenant_id},
            )
        return convert.model_to_pb(version)
