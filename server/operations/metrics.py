"""Prometheus metrics at ``/metrics`` (text exposition format 0.0.4), on a loopback port
(AIHUB_METRICS_PORT, default 9464) or, behind Envoy, a Unix socket.

Per server (each replica is its own scrape target; Prometheus sums them):

- ``aihub_rpc_requests_total{method,code}``, ``aihub_rpc_duration_seconds{method}``
- ``aihub_job_queue_wait_seconds{algorithm}`` (first attempts: created -> started),
  ``aihub_job_run_seconds{algorithm,status}``
- ``aihub_job_attempts_total{algorithm,status}``, ``aihub_job_failures_total{reason}``
- ``aihub_dispatcher_running_jobs``, ``aihub_dispatcher_max_concurrent_jobs`` (0: no cap),
  ``aihub_dispatcher_resources_in_use{resource}``
- ``aihub_schedule_firings_total``, ``aihub_schedule_firing_delay_seconds``,
  ``aihub_alert_deliveries_total{status}``, ``aihub_degradation_checks_total{outcome}``,
  ``aihub_retention_removed_total{kind}``

From the database and Ray at scrape time (the same on every server):

- ``aihub_jobs{status,priority,tenant}``: the largest AIHUB_METRICS_MAX_TENANTS tenants by
  name, the rest summed as tenant="_other" (a bounded label set)
- ``aihub_ray_resources{resource,state}`` (state total or available), ``aihub_ray_nodes``
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client as prom
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

from server.execution.clusters import ClusterMonitor
from server.execution.dispatcher import Dispatcher
from server.execution.payloads import AttemptEnd
from storage import db, jobs
from storage.records import Job
from storage.tenancy import Scope

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
OTHER_TENANTS = "_other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus reads


class ServiceMetrics:
    def __init__(self, *, max_tenants: int = 50, tenant_labels: bool = False) -> None:
        prom.disable_created_metrics()  # no *_created series: what they say, a restart says too
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_requests = prom.Counter(
            "aihub_rpc_requests", "gRPC calls ended, by method and status code.", ["method", "code"], registry=r
        )
        self.rpc_duration = prom.Histogram(
            "aihub_rpc_duration_seconds", "gRPC call duration, by method.", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = prom.Histogram(
            "aihub_job_queue_wait_seconds", "Time a job waited in the queue before its first attempt started.", ["algorithm"],
            buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.run_time = prom.Histogram(
            "aihub_job_run_seconds", "Time an attempt ran, by algorithm and how it ended.", ["algorithm", "status"],
            buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.attempts = prom.Counter(
            "aihub_job_attempts", "Attempts this server ran, by how they ended.", ["algorithm", "status"], registry=r
        )
        self.failures = prom.Counter("aihub_job_failures", "Failed attempts, by the error's reason.", ["reason"], registry=r)
        self.firings = prom.Counter("aihub_schedule_firings", "Schedule firings done by this server.", registry=r)
        self.firing_delay = prom.Histogram(
            "aihub_schedule_firing_delay_seconds", "How long after its time a schedule fired.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600, 3600), registry=r,
        )  # fmt: skip
        self.max_tenants = max_tenants
        # Tenant names in /metrics only when the operator asks (AIHUB_METRICS_TENANT_LABELS):
        # any local process can read the endpoint, and a tenant's name is not for all of them.
        self.tenant_labels = tenant_labels
        self._sources: list[Callable[[], list[Any]]] = []
        self._snapshot: list[Any] = []
        r.register(_Snapshot(self))

    # --- hooks ---------------------------------------------------------------------------
    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        name = method.rsplit("/", 1)[-1]
        self.rpc_requests.labels(name, code).inc()
        self.rpc_duration.labels(name).observe(seconds)

    def observe_attempt(self, job: Job, status: AttemptEnd, reason: str, seconds: float) -> None:
        self.attempts.labels(job.algorithm, status).inc()
        self.run_time.labels(job.algorithm, status).observe(seconds)
        if status is AttemptEnd.FAILED:
            self.failures.labels(reason or "Unknown").inc()
        if job.attempt == 1 and job.started_at is not None:
            self.queue_wait.labels(job.algorithm).observe(max(0.0, (job.started_at - job.created_at).total_seconds()))

    def observe_firing(self, delay_seconds: float) -> None:
        self.firings.inc()
        self.firing_delay.observe(max(0.0, delay_seconds))

    # --- scrape --------------------------------------------------------------------------
    async def render(self, collect: Callable[[], Any]) -> bytes:
        """The exposition text, after ``collect()`` (async) refreshed the scrape-time families."""
        self._snapshot = await collect()
        return prom.generate_latest(self.registry)


class _Snapshot:
    """The families read at scrape time (set by ServiceMetrics.render)."""

    def __init__(self, owner: ServiceMetrics) -> None:
        self.owner = owner

    def collect(self) -> list[Any]:
        return list(self.owner._snapshot)

    def describe(self) -> list[Any]:
        return []


class Collector:
    """What a scrape reads from the database, Ray and this server's loops."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        engine: db.Engine,
        *,
        dispatcher: Dispatcher,
        clusters: ClusterMonitor,
        counters: Callable[[], dict[str, dict[str, int]]],
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.dispatcher = dispatcher
        self.clusters = clusters
        self.counters = counters

    async def __call__(self) -> list[Any]:
        out: list[Any] = []
        jobs_family = _jobs_family(self.metrics.tenant_labels)
        try:
            async with db.transaction(self.engine, Scope.ALL) as conn:
                rows = await jobs.count_by_tenant(conn)
            _add_jobs(jobs_family, rows, self.metrics)
            up = 1.0
        except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails
            log.warning("metrics: database counts unavailable: %s", exc)
            up = 0.0
        out.append(jobs_family)
        out.append(GaugeMetricFamily("aihub_database_up", "Whether the last scrape could read the database.", value=up))
        d = self.dispatcher
        out.append(GaugeMetricFamily("aihub_dispatcher_running_jobs", "Jobs this server runs now.", value=len(d.running)))
        out.append(
            GaugeMetricFamily(
                "aihub_dispatcher_max_concurrent_jobs",
                "AIHUB_MAX_CONCURRENT_JOBS (0: the cluster's resources decide).",
                value=d.max_concurrent,
            )
        )
        in_use = GaugeMetricFamily(
            "aihub_dispatcher_resources_in_use", "Resources this server's running jobs hold (CPU, GPU, memory bytes).", labels=["resource"]
        )
        held: dict[str, float] = {}
        for need in d.committed.values():
            for kind, amount in need.items():
                held[kind] = held.get(kind, 0.0) + amount
        for kind in ("CPU", "GPU", "memory"):
            in_use.add_metric([kind], held.get(kind, 0.0))
        out.append(in_use)
        ray = GaugeMetricFamily(
            "aihub_ray_resources", "The Ray cluster's resources (CPU, GPU, memory bytes).", labels=["resource", "state"]
        )
        nodes = GaugeMetricFamily("aihub_ray_nodes", "Alive Ray nodes.")
        with contextlib.suppress(Exception):
            cluster = await self.clusters.current()
            if cluster is not None:
                for kind in ("CPU", "GPU", "memory"):
                    ray.add_metric([kind, "total"], float(cluster.resources.get(kind, 0.0)))
                    ray.add_metric([kind, "available"], float(cluster.available_resources.get(kind, 0.0)))
                nodes.add_metric([], float(cluster.num_workers))
        out += [ray, nodes]
        for name, (help_text, label, values) in _counter_families(self.counters()).items():
            family = prom.core.CounterMetricFamily(name, help_text, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            out.append(family)
        return out


def _counter_families(counts: dict[str, dict[str, int]]) -> dict[str, tuple[str, str, dict[str, int]]]:
    return {
        "aihub_alert_deliveries": ("Alert delivery tries by this server, by the status they left.", "status", counts.get("alerts", {})),
        "aihub_degradation_checks": ("Degradation checks run by this server, by outcome.", "outcome", counts.get("checks", {})),
        "aihub_retention_removed": ("Rows and versions removed by this server's retention sweeps.", "kind", counts.get("retention", {})),
    }


def _jobs_family(by_tenant: bool) -> GaugeMetricFamily:
    what = " and tenant." if by_tenant else " (AIHUB_METRICS_TENANT_LABELS adds the tenant)."
    labels = ["status", "priority", "tenant"] if by_tenant else ["status", "priority"]
    return GaugeMetricFamily("aihub_jobs", "Jobs in the database, by status, priority" + what, labels=labels)


def _add_jobs(family: GaugeMetricFamily, rows: list[tuple[str, str, str, int]], metrics: ServiceMetrics) -> None:
    """The job counts by (status, priority, tenant), or summed over tenants when the tenant
    label is off."""
    if metrics.tenant_labels:
        for (status, priority, tenant), n in _bounded(rows, metrics.max_tenants).items():
            family.add_metric([status, priority, tenant], n)
        return
    summed: dict[tuple[str, str], int] = {}
    for status, priority, _, n in rows:
        summed[(status, priority)] = summed.get((status, priority), 0) + n
    for (status, priority), n in sorted(summed.items()):
        family.add_metric([status, priority], n)


def _bounded(rows: list[tuple[str, str, str, int]], max_tenants: int) -> dict[tuple[str, str, str], int]:
    """Counts by (status, priority, tenant), the tenants past the first ``max_tenants`` (by
    name) summed as _other."""
    tenants = sorted({t for _, _, t, _ in rows})
    shown = set(tenants[:max_tenants])
    out: dict[tuple[str, str, str], int] = {}
    for status, priority, tenant, n in rows:
        key = (status, priority, tenant if tenant in shown else OTHER_TENANTS)
        out[key] = out.get(key, 0) + n
    return out


class MetricsServer:
    """GET /metrics on TCP (host, port) or a Unix socket. aiohttp serves it (installed with
    ray[default]): the scrape reads the database and Ray asynchronously, on the server's own
    event loop, which prometheus_client's WSGI/ASGI exposition apps (synchronous collectors)
    cannot await; prometheus_client still writes the text (``render``)."""

    def __init__(self, render: Callable[[], Any], *, host: str = "127.0.0.1", port: int = 9464, unix_socket: Path | None = None) -> None:
        self.render = render
        self.host, self.port, self.unix_socket = host, port, unix_socket
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)  # HEAD too
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        if self.unix_socket is not None:
            self.unix_socket.unlink(missing_ok=True)
            site: web.BaseSite = web.UnixSite(self._runner, str(self.unix_socket))
        else:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_port=False)
        await site.start()
        if self.unix_socket is None:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 2)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.render(), headers={"Content-Type": CONTENT_TYPE})
