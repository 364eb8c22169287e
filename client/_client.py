"""TrainingClient (blocking) and AsyncTrainingClient (asyncio) over the generated stubs.

Both share every method through ``_Methods``: each method builds its request and names
the RPC; the two classes differ only in how a call is made. gRPC errors come back as
the typed exceptions of :mod:`client.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import grpc

from client import _requests as req
from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import admin_pb2_grpc as admin_grpc
from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from client._gen.aihub.training.v1 import operations_pb2_grpc as ops_grpc
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from client.errors import from_rpc_error

DEFAULT_TARGET = "localhost:50051"
CHUNK = 1 << 20
ADMIN_METHODS = frozenset(admin_pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name)
OPERATIONS_METHODS = frozenset(ops_pb.DESCRIPTOR.services_by_name["OperationsService"].methods_by_name)


def _auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries an API key (none without one)."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def _stub_for(client: Any, method: str) -> Any:
    if method in ADMIN_METHODS:
        return client._admin
    return client._operations if method in OPERATIONS_METHODS else client._stub


def _same(resp: Any) -> Any:
    return resp


class _Methods:
    """The API, call-style agnostic: ``_call``/``_stream``/``_upload`` do the calling."""

    _call: Callable[..., Any]
    _stream: Callable[..., Any]
    _upload: Callable[..., Any]

    def create_job(
        self,
        tenant_id: str,
        model_type: str,
        config: req.ConfigLike,
        *,
        priority: str | int | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ):
        """Queue a job; ``config`` is the guide's TrainingConfig as a dict (or a message)."""
        request = req.create(tenant_id, model_type, config, priority=priority, metadata=metadata, request_id=request_id)
        return self._call("CreateTrainingJob", request, _same)

    def get_job(self, job_id: str):
        return self._call("GetTrainingJob", pb.GetTrainingJobRequest(job_id=job_id), _same)

    def list_jobs(
        self,
        tenant_id: str | None = None,
        status: str | None = None,
        model_type: str | None = None,
        page_size: int = 0,
        page_token: str = "",
        *,
        schedule_id: str = "",
    ):
        """One page: a ListTrainingJobsResponse (jobs, next_page_token)."""
        request = req.list_jobs(tenant_id, status, model_type, page_size, page_token)
        request.schedule_id = schedule_id
        return self._call("ListTrainingJobs", request, _same)

    def cancel_job(self, job_id: str):
        return self._call("CancelTrainingJob", pb.CancelTrainingJobRequest(job_id=job_id), _same)

    def retry_job(self, job_id: str):
        return self._call("RetryTrainingJob", pb.RetryTrainingJobRequest(job_id=job_id), _same)

    def update_job(self, job_id: str, *, priority: str | int):
        request = pb.UpdateTrainingJobRequest(job_id=job_id, priority=req.enum_value(pb.Priority, priority, "priority"))
        return self._call("UpdateTrainingJob", request, _same)

    def get_metrics(self, job_id: str):
        return self._call("GetTrainingJobMetrics", pb.GetTrainingJobMetricsRequest(job_id=job_id), _same)

    def get_predictions(self, job_id: str, *, max_points: int = 0, page_size: int = 0, page_token: str = ""):
        """A COMPLETED job's validation-window predictions (a GetPredictionsResponse): one page,
        or the whole window thinned to about ``max_points``."""
        request = pb.GetPredictionsRequest(job_id=job_id, max_points=max_points, page_size=page_size, page_token=page_token)
        return self._call("GetPredictions", request, _same)

    def validate_config(self, config: req.ConfigLike):
        return self._call("ValidateTrainingConfig", pb.ValidateTrainingConfigRequest(config=req.config(config)), _same)

    def list_clusters(self):
        return self._call("ListRayClusters", pb.ListRayClustersRequest(), lambda r: list(r.clusters))

    def health(self):
        return self._call("GetHealth", pb.GetHealthRequest(), _same)

    def list_models(self, tenant_id: str, model_type: str | None = None, *, include_deleted: bool = False):
        """The tenant's registered model versions (a list of ModelVersion)."""
        request = pb.ListModelVersionsRequest(
            tenant_id=tenant_id, model_type=req.enum_value(pb.ModelType, model_type, "model_type"), include_deleted=include_deleted
        )
        return self._call("ListModelVersions", request, lambda r: list(r.versions))

    def get_model(self, model_id: str, *, tenant_id: str = ""):
        return self._call("GetModelVersion", pb.GetModelVersionRequest(model_id=model_id, tenant_id=tenant_id), _same)

    def evaluate_model(self, model_id: str, start: str, end: str, *, tenant_id: str = ""):
        """Score a version on another window: an EvaluateModelVersionResponse (metrics)."""
        request = pb.EvaluateModelVersionRequest(model_id=model_id, tenant_id=tenant_id, evaluation_start=start, evaluation_end=end)
        return self._call("EvaluateModelVersion", request, _same)

    def delete_model(self, model_id: str, *, tenant_id: str = ""):
        return self._call("DeleteModelVersion", pb.DeleteModelVersionRequest(model_id=model_id, tenant_id=tenant_id), _same)

    def keep_model(self, model_id: str, keep: bool = True, *, tenant_id: str = ""):
        """Protect a version from the retention sweep (keep=False lets it go)."""
        return self._call("UpdateModelVersion", pb.UpdateModelVersionRequest(model_id=model_id, tenant_id=tenant_id, keep=keep), _same)

    def forecast(
        self,
        model_id: str = "",
        *,
        alias: str = "",
        tenant_id: str = "",
        model_type: str = "forecast",
        origin: str = "",
        horizon_hours: int = 0,
        series: list[str] | None = None,
        inputs: list[dict[str, Any]] | None = None,
        history_hours: int = 0,
    ):
        """Forecast the hours after ``origin`` (default: each series' last actual) from a
        version named by id or by ``alias``: a ForecastModelVersionResponse (points)."""
        request = pb.ForecastModelVersionRequest(
            model_id=model_id,
            alias=alias,
            tenant_id=tenant_id,
            model_type=req.enum_value(pb.ModelType, model_type, "model_type") if alias else pb.MODEL_TYPE_UNSPECIFIED,
            origin=origin,
            horizon_hours=horizon_hours,
            series=list(series or []),
            history_hours=history_hours,
        )
        for row in inputs or []:
            request.inputs.add().update(dict(row))
        return self._call("ForecastModelVersion", request, _same)

    def list_forecasts(self, tenant_id: str = "", *, page_size: int = 0, page_token: str = "", **filters: str):
        """The tenant's stored forecasts (scheduled runs), filtered by alias, model_id, origin,
        series_id, start, end: a ListForecastsResponse (points, next_page_token)."""
        request = pb.ListForecastsRequest(tenant_id=tenant_id, page_size=page_size, page_token=page_token, **filters)
        return self._call("ListForecasts", request, _same)

    def set_alias(self, alias: str, model_id: str, *, reason: str = "", tenant_id: str = ""):
        """Point ``alias`` at a version (made or moved; the move is recorded): a ModelAlias."""
        request = pb.SetModelAliasRequest(alias=alias, model_id=model_id, reason=reason, tenant_id=tenant_id)
        return self._call("SetModelAlias", request, _same)

    def delete_alias(self, alias: str, *, tenant_id: str = "", model_type: str = "forecast", reason: str = ""):
        request = pb.DeleteModelAliasRequest(alias=alias, tenant_id=tenant_id, model_type=model_type, reason=reason)
        return self._call("DeleteModelAlias", request, _same)

    def list_aliases(self, tenant_id: str = "", model_type: str = ""):
        """The tenant's aliases, each with its version and moves (a list of ModelAlias)."""
        request = pb.ListModelAliasesRequest(tenant_id=tenant_id, model_type=model_type)
        return self._call("ListModelAliases", request, lambda r: list(r.aliases))

    # --- schedules and alerts --------------------------------------------------------------
    def create_schedule(
        self,
        tenant_id: str,
        model_type: str,
        config: req.ConfigLike | None,
        schedule: str,
        *,
        timezone: str = "",
        window: str = "",
        name: str = "",
        priority: str | int | None = None,
        metadata: Mapping[str, str] | None = None,
        action: str | None = None,
        degradation: Mapping[str, Any] | None = None,
        paused: bool = False,
        alias: str = "",
        forecast: Mapping[str, Any] | None = None,
        promotion: Mapping[str, Any] | None = None,
    ):
        """A cron schedule: each firing creates a job (and/or a degradation check), or, with
        action forecast, forecasts from the alias's version (config None), or with
        train_and_promote trains a challenger for the alias."""
        request = ops_pb.CreateScheduleRequest(
            tenant_id=tenant_id,
            model_type=req.enum_value(pb.ModelType, model_type, "model_type"),
            config=req.config(config) if config is not None else None,
            alias=alias,
            schedule=schedule,
            timezone=timezone,
            window=window,
            name=name,
            priority=req.enum_value(pb.Priority, priority, "priority"),
            metadata=dict(metadata or {}),
            action=req.enum_value(ops_pb.ScheduleAction, action, "action"),
            paused=paused,
        )
        if degradation is not None:
            request.degradation.CopyFrom(ops_pb.DegradationPolicy(**dict(degradation)))
        if forecast is not None:
            request.forecast.CopyFrom(ops_pb.ForecastPolicy(**dict(forecast)))
        if promotion is not None:
            request.promotion.CopyFrom(ops_pb.PromotionPolicy(**dict(promotion)))
        return self._call("CreateSchedule", request, _same)

    def get_schedule(self, schedule_id: str):
        return self._call("GetSchedule", ops_pb.GetScheduleRequest(schedule_id=schedule_id), _same)

    def list_schedules(self, tenant_id: str = ""):
        return self._call("ListSchedules", ops_pb.ListSchedulesRequest(tenant_id=tenant_id), lambda r: list(r.schedules))

    def pause_schedule(self, schedule_id: str):
        return self._call("PauseSchedule", ops_pb.PauseScheduleRequest(schedule_id=schedule_id), _same)

    def resume_schedule(self, schedule_id: str):
        return self._call("ResumeSchedule", ops_pb.ResumeScheduleRequest(schedule_id=schedule_id), _same)

    def run_schedule(self, schedule_id: str):
        """Fire now, once: a RunScheduleResponse (schedule, job, check)."""
        return self._call("RunSchedule", ops_pb.RunScheduleRequest(schedule_id=schedule_id), _same)

    def delete_schedule(self, schedule_id: str):
        return self._call("DeleteSchedule", ops_pb.DeleteScheduleRequest(schedule_id=schedule_id), _same)

    def create_alert_target(self, tenant_id: str, url: str, *, events: list[str] | None = None, secret: str = ""):
        """A webhook for the tenant's alerts; the answer holds the signing secret (only here)."""
        request = ops_pb.CreateAlertTargetRequest(tenant_id=tenant_id, url=url, events=list(events or []), secret=secret)
        return self._call("CreateAlertTarget", request, _same)

    def list_alert_targets(self, tenant_id: str = ""):
        return self._call("ListAlertTargets", ops_pb.ListAlertTargetsRequest(tenant_id=tenant_id), lambda r: list(r.targets))

    def delete_alert_target(self, target_id: str):
        return self._call("DeleteAlertTarget", ops_pb.DeleteAlertTargetRequest(target_id=target_id), _same)

    def list_alert_deliveries(self, tenant_id: str = "", page_size: int = 0):
        request = ops_pb.ListAlertDeliveriesRequest(tenant_id=tenant_id, page_size=page_size)
        return self._call("ListAlertDeliveries", request, lambda r: list(r.deliveries))

    def stream_logs(self, job_id: str, *, follow: bool = True, after_sequence: int = 0):
        """Log entries: the stored ones, then (follow) new ones until the job is final."""
        return self._stream("StreamTrainingJobLogs", req.logs(job_id, follow, after_sequence), _same)

    def watch_job(self, job_id: str):
        """The job now, then on every change, until it is final."""
        return self._stream("WatchTrainingJob", pb.WatchTrainingJobRequest(job_id=job_id), _same)

    def import_data(
        self,
        tenant_id: str,
        table: str,
        data: bytes | str | Path,
        *,
        format: str | None = None,
        chunk_size: int = CHUNK,
        duplicates: str = "",
    ):
        """Import a CSV or Parquet file (path or bytes) into features.<table>; a file is
        streamed in chunks, never read whole. ``tenant_id`` "" means the API key's tenant.
        ``duplicates``: refuse (default), first, last or mean for a repeated timestamp."""
        if isinstance(data, (str, Path)):
            path = Path(data)
            if format is None and path.suffix.lower() in (".parquet", ".pq"):
                format = "parquet"
            return self._upload("ImportFeatureData", req.import_file_chunks(tenant_id, table, path, format, chunk_size, duplicates))
        return self._upload("ImportFeatureData", req.import_chunks(tenant_id, table, data, format, chunk_size, duplicates))

    # --- administration (admin keys) -------------------------------------------------------
    def create_key(self, tenant_id: str = "", *, admin: bool = False, name: str = "", expires_at: datetime | None = None):
        """A new API key: a CreateApiKeyResponse whose ``key`` is the secret (shown only now).
        ``expires_at``: when it stops working (an aware datetime; default: never)."""
        request = admin_pb.CreateApiKeyRequest(tenant_id=tenant_id, admin=admin, name=name)
        if expires_at is not None:
            request.expires_at.FromDatetime(expires_at)
        return self._call("CreateApiKey", request, _same)

    def list_audit_events(self, tenant_id: str = "", *, action: str = "", page_size: int = 100, page_token: str = ""):
        """One page of the audit trail, newest first (a ListAuditEventsResponse)."""
        request = admin_pb.ListAuditEventsRequest(tenant_id=tenant_id, action=action, page_size=page_size, page_token=page_token)
        return self._call("ListAuditEvents", request, _same)

    def list_keys(self, tenant_id: str = ""):
        return self._call("ListApiKeys", admin_pb.ListApiKeysRequest(tenant_id=tenant_id), lambda r: list(r.keys))

    def revoke_key(self, key_id: str):
        return self._call("RevokeApiKey", admin_pb.RevokeApiKeyRequest(key_id=key_id), _same)

    def get_quota(self, tenant_id: str):
        return self._call("GetTenantQuota", admin_pb.GetTenantQuotaRequest(tenant_id=tenant_id), _same)

    def update_quota(
        self,
        tenant_id: str,
        *,
        max_queued_jobs: int | None = None,
        max_running_jobs: int | None = None,
        max_priority: str | None = None,
        max_import_bytes: int | None = None,
        keep_versions: int | None = None,
        min_schedule_interval_seconds: int | None = None,
        max_scheduled_jobs_per_day: int | None = None,
        max_open_streams: int | None = None,
    ):
        """Change some of a tenant's quotas (max_running_jobs 0: no cap; keep_versions 0: keep all)."""
        request = admin_pb.UpdateTenantQuotaRequest(
            tenant_id=tenant_id, max_priority=req.enum_value(pb.Priority, max_priority, "max_priority")
        )
        for name, value in (
            ("max_queued_jobs", max_queued_jobs),
            ("max_running_jobs", max_running_jobs),
            ("max_import_bytes", max_import_bytes),
            ("keep_versions", keep_versions),
            ("min_schedule_interval_seconds", min_schedule_interval_seconds),
            ("max_scheduled_jobs_per_day", max_scheduled_jobs_per_day),
            ("max_open_streams", max_open_streams),
        ):
            if value is not None:
                setattr(request, name, value)
        return self._call("UpdateTenantQuota", request, _same)


class TrainingClient(_Methods):
    """Blocking client. ``with TrainingClient("localhost:50051", api_key=...) as c: c.get_job(...)``."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
        timeout: float | None = 60.0,
        api_key: str | None = None,
    ):
        self._channel = channel or grpc.insecure_channel(target)
        self._stub = pb_grpc.TrainingServiceStub(self._channel)
        self._admin = admin_grpc.AdminServiceStub(self._channel)
        self._operations = ops_grpc.OperationsServiceStub(self._channel)
        self._metadata = _auth_metadata(api_key)
        self.timeout = timeout

    def _rpc(self, method: str) -> Any:
        return getattr(_stub_for(self, method), method)

    def _call(self, method: str, request: Any, extract: Callable[[Any], Any]) -> Any:
        try:
            return extract(self._rpc(method)(request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _stream(self, method: str, request: Any, extract: Callable[[Any], Any]) -> Iterator[Any]:
        call = self._rpc(method)(request, metadata=self._metadata)
        try:
            for item in call:
                yield extract(item)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # a caller that stops iterating early ends the RPC too

    def _upload(self, method: str, chunks: Iterator[Any]) -> Any:
        return self._call(method, chunks, _same)

    def wait(self, job_id: str) -> pb.TrainingJob:
        """Block until the job is final; returns it."""
        job = None
        for job in self.watch_job(job_id):  # noqa: B007 - the last snapshot is the answer
            pass
        return cast(pb.TrainingJob, job)  # a watch yields at least the current state

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTrainingClient(_Methods):
    """asyncio client: ``await c.get_job(...)``, ``async for e in c.stream_logs(...)``."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = 60.0,
        api_key: str | None = None,
    ):
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.TrainingServiceStub(self._channel)
        self._admin = admin_grpc.AdminServiceStub(self._channel)
        self._operations = ops_grpc.OperationsServiceStub(self._channel)
        self._metadata = _auth_metadata(api_key)
        self.timeout = timeout

    def _rpc(self, method: str) -> Any:
        return getattr(_stub_for(self, method), method)

    async def _call(self, method: str, request: Any, extract: Callable[[Any], Any]) -> Any:
        try:
            return extract(await self._rpc(method)(request, timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _stream(self, method: str, request: Any, extract: Callable[[Any], Any]) -> AsyncIterator[Any]:
        call = self._rpc(method)(request, metadata=self._metadata)
        try:
            async for item in call:
                yield extract(item)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # a caller that stops iterating early ends the RPC too

    async def _upload(self, method: str, chunks: Iterator[Any]) -> Any:
        return await self._call(method, chunks, _same)

    async def wait(self, job_id: str) -> pb.TrainingJob:
        job = None
        async for job in self.watch_job(job_id):  # noqa: B007 - the last snapshot is the answer
            pass
        return cast(pb.TrainingJob, job)  # a watch yields at least the current state

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncTrainingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
