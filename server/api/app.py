"""Wiring: builds the storage engine, the event hub, the Ray executor, the dispatcher, the
servicers and the gRPC server from settings, and takes them down again. The only place
that knows them all; each part gets what it uses explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import admin_pb2_grpc as admin_grpc
from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from client._gen.aihub.training.v1 import operations_pb2_grpc as ops_grpc
from client._gen.aihub.training.v1 import training_http_pb2 as http_pb
from client._gen.aihub.training.v1 import training_http_pb2_grpc as http_grpc
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from server.api import auth
from server.api.admin import AdminServicer
from server.api.errors import ErrorInterceptor
from server.api.events import EventHub
from server.api.operations import OperationsServicer
from server.api.rest import TrainingHttpServicer
from server.api.servicer import TrainingServicer
from server.api.streams import StreamGate
from server.execution import tracking
from server.execution.artifacts import ArtifactStore
from server.execution.clusters import ClusterMonitor
from server.execution.dispatcher import Dispatcher, Limits
from server.execution.driver import DriverExecutor, DriverLost
from server.execution.evaluation import ModelEvaluator
from server.execution.executor import Executor
from server.execution.forecasts import ModelServer
from server.execution.payloads import RetryPolicy, TaskSettings
from server.lifecycle import ensure_free
from server.operations.alerts import Alerter
from server.operations.metrics import Collector, MetricsServer, ServiceMetrics
from server.operations.retention import RetentionSweep
from server.operations.scheduler import Scheduler
from server.operations.tasks import FiringTasks
from server.private import private_dir
from server.settings import Settings
from storage import db, keys
from storage.tenancy import DISPATCHER_ROLE, Scope

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainingService"].full_name
HTTP_SERVICE_NAME = http_pb.DESCRIPTOR.services_by_name["TrainingHttpService"].full_name
ADMIN_SERVICE_NAME = admin_pb.DESCRIPTOR.services_by_name["AdminService"].full_name
OPERATIONS_SERVICE_NAME = ops_pb.DESCRIPTOR.services_by_name["OperationsService"].full_name
# The largest message a client may send: REST bodies are 1 MiB at most (a feature file
# streams in pieces), and the gRPC import sends a file in chunks (the client's are 1 MiB),
# so no call needs the server to hold a whole large file in one message.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_METADATA_BYTES = 128 * 1024  # above envoy.yaml's max_request_headers_kb (60)
LONG_METHODS = (
    "EvaluateModelVersion",
    "EvaluateModelVersionHttp",
    "ForecastModelVersion",
    "ForecastModelVersionHttp",
    "ImportFeatureData",
    "ImportFeatureDataHttp",
)


def _stack(task: asyncio.Task) -> list[str]:
    import io

    out = io.StringIO()
    task.print_stack(file=out)
    return [out.getvalue()]


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass
class App:
    settings: Settings
    database_url: str
    dispatch: bool = True
    executor: Executor | None = None  # default: a DriverExecutor (the Ray driver in a child process)
    port: int = 0
    metrics_port: int = 0  # where /metrics answers (TCP), once started
    _server: grpc.aio.Server | None = field(default=None, init=False)

    async def start(self) -> None:
        s = self.settings
        ensure_free(s.grpc_host, s.grpc_port, "AIHUB_GRPC_PORT")  # a clear error, before anything starts
        if s.metrics_unix_socket is None:
            ensure_free("127.0.0.1", s.metrics_port, "AIHUB_METRICS_PORT")
        self.metrics = ServiceMetrics(max_tenants=s.metrics_max_tenants, tenant_labels=s.metrics_tenant_labels)
        await asyncio.to_thread(db.migrate, self.database_url)  # as the owner (DATABASE_URL)
        # Requests and Ray tasks: as aihub_service (row-level security by tenant), reached from
        # the service's own LOGIN role when AIHUB_SERVICE_DATABASE_URL is given, so that a
        # statement slipped into a request cannot RESET ROLE to the tables' owner.
        service_url = s.service_database_url or self.database_url
        self.service_database_url = service_url
        self.engine = db.create_engine(service_url)
        self.dispatch_engine = db.create_engine(self.database_url, role=DISPATCHER_ROLE, pool_size=3)
        await self._start_auth()
        self.events = EventHub(db.asyncpg_dsn(service_url))
        await self.events.start()
        if self.executor is None:
            self.executor = DriverExecutor(
                s.ray_address,
                job_cpus=s.job_cpus,
                local_cpus=s.local_ray_cpus,
                local_nodes=s.local_ray_nodes,
                ship_code=s.ship_code,
                restart_seconds=s.ray_reconnect_seconds,
                log_format=s.log_format,
                log_level=s.log_level,
            )
        await asyncio.to_thread(self.executor.start)
        try:
            private_dir(s.artifacts)  # models only the service's user may read (server/private.py)
        except PermissionError:
            log.warning("the artifact root %s is not ours to make private (0700): check its mode", s.artifacts)
        artifacts = ArtifactStore(s.artifacts)
        mlflow_uri, mlflow_artifacts = s.mlflow_tracking_uri, None
        if not mlflow_uri:  # the local store under DATA_DIR/mlruns (MLflow's own data; the service's stays in PostgreSQL)
            mlflow_uri, mlflow_artifacts = tracking.default_uri(s.data_dir)
            (s.data_dir / "mlruns").mkdir(parents=True, exist_ok=True)
        task_settings = TaskSettings(
            database_url=service_url,
            artifact_root=str(artifacts.root),
            num_threads=self.executor.job_cpus,
            retry=RetryPolicy(s.max_retries, s.retry_base_seconds),
            log_format=s.log_format,
            log_level=s.log_level,
            mlflow_uri=mlflow_uri,
            mlflow_artifact_root=mlflow_artifacts,
            job_memory=s.job_memory_bytes,
        )
        self.dispatcher = Dispatcher(
            self.dispatch_engine,
            self.executor,
            server_id=s.server_id or f"{socket.gethostname()}:{os.getpid()}",
            task_settings=task_settings,
            max_concurrent=s.max_concurrent_jobs,
            poll_interval=s.poll_interval_seconds,
            lease_seconds=s.lease_seconds,
            limits=Limits(
                default_runtime_seconds=s.default_max_runtime_seconds,
                stall_warning_seconds=s.stall_warning_seconds,
                max_lost_leases=s.max_lost_leases,
            ),
            observer=self.metrics.observe_attempt,
            reserved_slots=s.reserved_slots,
        )
        self.events.add_listener(self.dispatcher.on_event)
        if not self.dispatch:
            self.dispatcher.pause()
        await self.dispatcher.start()
        self.clusters = ClusterMonitor(self.engine, self.executor)
        await self.clusters.refresh()
        self._cluster_watch = asyncio.create_task(self.clusters.watch(s.cluster_refresh_seconds), name="cluster-registry")
        evaluator = ModelEvaluator(self.executor, artifacts, task_settings)
        models_in_use = ModelServer(self.executor, artifacts, task_settings)
        await self._start_operations(artifacts, evaluator, models_in_use)
        typed = TrainingServicer(
            engine=self.engine,
            events=self.events,
            evaluator=evaluator,
            models_in_use=models_in_use,
            artifacts=artifacts,
            clusters=self.clusters,
            max_runtime_cap=s.max_runtime_cap_seconds,
            streams=StreamGate(per_key=s.max_streams_per_key),
        )

        await self._serve(typed)
        try:
            room = f"room for {await asyncio.to_thread(self.executor.capacity)} single-node jobs"
        except DriverLost:
            room = "Ray not connected yet"
        log.info("gRPC on %s:%d (server %s, %s)", s.grpc_host, self.port, self.dispatcher.server_id, room)
        if s.auth == "off":
            log.warning("authentication is OFF (AIHUB_AUTH=off): any local caller acts for the tenant it names; loopback only")

    async def _start_auth(self) -> None:
        """The bootstrap admin key, the authenticator with its failure limit, the audit sink."""
        s = self.settings
        if s.bootstrap_admin_key:
            async with db.transaction(self.engine, Scope.ALL) as conn:
                key = await keys.ensure_admin(conn, auth.bootstrap_key_id(s.bootstrap_admin_key), auth.hash_key(s.bootstrap_admin_key))
            log.info("bootstrap admin key %s is active", key.key_id)
        self.authenticator = auth.Authenticator(
            self.engine,
            required=s.auth == "required",
            limiter=auth.FailureLimiter(burst=s.auth_failed_lookups_burst, per_minute=s.auth_failed_lookups_per_minute),
        )
        self.authenticator.sink = auth.AuditSink(self.engine)
        self.authenticator.sink.start()

    async def _serve(self, typed: TrainingServicer) -> None:
        """The gRPC server with every service, listening."""
        s = self.settings
        interceptor = ErrorInterceptor(
            self.authenticator,
            deadline=s.request_timeout_seconds,
            deadlines=dict.fromkeys(LONG_METHODS, s.long_request_timeout_seconds),
            observe=self.metrics.observe_rpc,
        )
        server = grpc.aio.server(
            interceptors=[interceptor],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                # Headers as large as Envoy lets through (60 KiB) reach the interceptor, so an
                # over-long key or path is refused there, in the guide's error body, not by
                # gRPC's own RESOURCE_EXHAUSTED (which the REST face would show as a bare 429).
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        pb_grpc.add_TrainingServiceServicer_to_server(typed, server)
        admin = AdminServicer(engine=self.engine, authenticator=self.authenticator)
        admin_grpc.add_AdminServiceServicer_to_server(admin, server)
        operations = OperationsServicer(engine=self.engine, clusters=self.clusters, allow_private_targets=s.alert_allow_private_targets)
        ops_grpc.add_OperationsServiceServicer_to_server(operations, server)
        http_grpc.add_TrainingHttpServiceServicer_to_server(TrainingHttpServicer(typed, operations, admin), server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, HTTP_SERVICE_NAME, ADMIN_SERVICE_NAME, OPERATIONS_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME],
            server,
            pool=_MethodAwarePool(descriptor_pool.Default()),
        )
        self.port = server.add_insecure_port(f"{s.grpc_host}:{s.grpc_port}")
        if s.grpc_unix_socket is not None:
            s.grpc_unix_socket.unlink(missing_ok=True)
            server.add_insecure_port(f"unix:{s.grpc_unix_socket}")
        await server.start()
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def _start_operations(self, artifacts: ArtifactStore, evaluator: ModelEvaluator, models_in_use: ModelServer) -> None:
        """The loops that run the service unattended (server/operations), and /metrics."""
        s = self.settings
        self.scheduler = Scheduler(self.engine, interval=s.scheduler_interval_seconds, observe=self.metrics.observe_firing)
        self.alerter = Alerter(
            self.dispatch_engine,
            public_url=s.alert_base_url,
            retry_base=s.alert_retry_base_seconds,
            max_attempts=s.alert_max_attempts,
            allow_private=s.alert_allow_private_targets,
        )
        self.checker = FiringTasks(self.engine, self.dispatch_engine, evaluator, models_in_use)
        self.retention = RetentionSweep(
            self.dispatch_engine,
            artifacts,
            interval=s.retention_interval_seconds,
            log_days=s.retention_log_days,
            job_days=s.retention_job_days,
            batch=s.retention_batch_rows,
        )
        self._loops = (self.scheduler, self.alerter, self.checker, self.retention)
        for loop in self._loops:
            loop.start()
        collect = Collector(
            self.metrics,
            self.engine,
            dispatcher=self.dispatcher,
            clusters=self.clusters,
            counters=lambda: {"alerts": self.alerter.sent, "checks": self.checker.done, "retention": self.retention.totals},
        )
        self.metrics_server = MetricsServer(lambda: self.metrics.render(collect), port=s.metrics_port, unix_socket=s.metrics_unix_socket)
        await self.metrics_server.start()
        self.metrics_port = self.metrics_server.port

    async def drain(self, seconds: float) -> None:
        """Before a stop: tell load balancers this server is going (health NOT_SERVING),
        stop claiming jobs, and give the running ones up to ``seconds`` to finish, while
        calls (and streams) are still answered."""
        if self._server is not None:
            for service in ("", SERVICE_NAME):
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.dispatcher.drain(seconds)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving, stop dispatching (running jobs go back to the queue as their next
        attempt, and their Ray tasks stop themselves), close the database. Each step is
        bounded."""
        steps = []
        if self._server is not None:
            steps += [("health", self.health.enter_graceful_shutdown()), ("grpc", self._server.stop(grace))]
        steps += [("cluster registry", _cancel(self._cluster_watch))]
        steps += [(type(loop).__name__, loop.stop()) for loop in self._loops]
        steps += [("metrics", self.metrics_server.stop())]
        sink = getattr(getattr(self, "authenticator", None), "sink", None)
        if sink is not None:
            steps += [("audit trail", sink.stop())]
        steps += [("dispatcher", self.dispatcher.stop()), ("events", self.events.stop()), ("engine", self.engine.dispose())]
        steps += [("dispatch engine", self.dispatch_engine.dispose())]
        for name, step in steps:
            try:
                await asyncio.wait_for(step, grace + 10)
            except TimeoutError:
                log.error("stopping %s took longer than %.0f s; going on", name, grace + 10)
                for task in asyncio.all_tasks():
                    log.error("task still running: %r\n%s", task, "".join(_stack(task)))

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


class _MethodAwarePool:
    """The descriptor pool reflection answers from, except that a method's full name
    (``pkg.Service.Method``, what ``grpcurl describe`` sends for a method) finds its
    service's file: Python protobuf's pool looks up messages, enums, fields and services,
    not methods."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str):
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service, _, method = name.rpartition(".")
            if service and method in self._pool.FindServiceByName(service).methods_by_name:  # KeyError: not a service
                return self._pool.FindFileContainingSymbol(service)
            raise

    def __getattr__(self, name: str):
        return getattr(self._pool, name)
