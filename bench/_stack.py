"""A private stack for benchmarks: embedded PostgreSQL in a temp folder, a local Ray and
the gRPC server in this process, exactly as `make run` wires them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from server.api.app import App
from server.execution.executor import RayExecutor
from server.lifecycle import tune_gc
from server.settings import Settings
from storage import db, features, tenants
from storage.embedded import EmbeddedPostgres
from storage.records import Priority
from storage.tenancy import Scope

# The guide's quick-start config (bench.tuning, bench.predictions).
QUICK_START = {
    "model_type": "forecast",
    "algorithm": "lgbm",
    "hyperparameters": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 7, "num_leaves": 31},
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-12-31T23:59:59",
    "features": ["temperature", "humidity", "day_of_week", "hour_of_day", "load_lag_1", "load_lag_24"],
    "target": "load",
    "validation_split": 0.2,
    "random_seed": 42,
}

# A job that only has to exist (the latency benchmarks read it; nothing runs it).
READ_ONLY_JOB = {
    "model_type": "forecast",
    "algorithm": "lgbm",
    "features": ["temperature"],
    "target": "load",
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-02-01T00:00:00",
}


@dataclass
class _Shared:
    """One PostgreSQL and one local Ray for every stack of a ``python -m bench --smoke`` run."""

    folder: Path
    url: str
    executor: RayExecutor
    databases: itertools.count = field(default_factory=itertools.count)


_SHARED: _Shared | None = None


@contextlib.contextmanager
def shared() -> Iterator[None]:
    """Within this block every ``stack()`` shares one PostgreSQL (a database of its own each)
    and one local Ray: the benchmarks' smoke runs, in seconds instead of a start-up each."""
    global _SHARED  # noqa: PLW0603 - one run's shared stack, set and cleared here only
    with tempfile.TemporaryDirectory(prefix="aihub-bench-shared-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "postgres")
        url = pg.start()
        executor = RayExecutor(None, job_cpus=1, local_cpus=os.cpu_count() or 2)
        executor.start()
        _SHARED = _Shared(Path(tmp), url, executor)
        try:
            yield
        finally:
            _SHARED = None
            executor.stop()
            pg.stop()


async def _fresh_database(url: str, name: str) -> str:
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # our own name: bench_<n>
    finally:
        await conn.close()
    fresh = make_url(url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(db.migrate, fresh)
    return fresh


@contextlib.asynccontextmanager
async def stack(**settings) -> AsyncIterator[App]:
    with tempfile.TemporaryDirectory(prefix="aihub-bench-") as tmp:
        pg = None
        if _SHARED is None:
            pg = EmbeddedPostgres(Path(tmp) / "postgres")
            url = pg.start()
        else:
            url = await _fresh_database(_SHARED.url, f"bench_{next(_SHARED.databases)}")
        app = App(
            Settings(_env_file=None, database_url=url, data_dir=Path(tmp), grpc_port=0, metrics_port=0, **{"auth": "off", **settings}),
            url,
            **({"executor": _SHARED.executor} if _SHARED is not None else {}),
        )
        await app.start()
        tune_gc()  # as python -m server does
        try:
            yield app
        finally:
            await app.stop(grace=0)
            if pg is not None:
                app.executor.stop()
                pg.stop()


async def load(app: App, tenant: str, table: str, frame) -> None:
    async with db.transaction(app.engine, Scope.of(tenant)) as conn:
        await tenants.update(conn, tenant, {"max_priority": Priority.CRITICAL, "max_queued_jobs": 100_000})
        await features.import_frame(conn, table, frame)


def free_port() -> int:
    """A free TCP port on loopback (for the Envoy a benchmark starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def open_loop(call, rate: float, seconds: float, *, warmup: float = 2.0) -> tuple[list[float], int, float]:
    """Offer ``await call()`` at a fixed rate (open loop: each latency counts from the
    request's scheduled send time, so a slow server cannot hide queueing). The first
    ``warmup`` seconds run at the same rate but are not counted (connections, caches and
    the server's pools reach their steady state). Returns (latencies, errors, elapsed
    seconds of the counted part).

    The instrument must not stall itself: finished requests are dropped at once (no list
    of thousands of tasks to gather at the end) and the collector is frozen, so a
    generation-2 collection in this process is not charged to the server."""
    import asyncio
    import gc
    import time

    latencies: list[float] = []
    errors = 0
    warm, n = int(rate * warmup), int(rate * (warmup + seconds))
    t0 = time.perf_counter() + 0.1
    in_flight: set[asyncio.Task[None]] = set()
    idle = asyncio.Event()

    async def one(at: float, counted: bool) -> None:
        nonlocal errors
        try:
            await call()
            if counted:
                latencies.append(time.perf_counter() - at)
        except Exception:  # noqa: BLE001 - counted and reported
            errors += counted

    def finished(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        if not in_flight:
            idle.set()

    gc.collect()
    gc.freeze()
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(at, i >= warm))
        in_flight.add(task)
        task.add_done_callback(finished)
    if in_flight:
        idle.clear()
        await idle.wait()
    gc.unfreeze()
    return latencies, errors, time.perf_counter() - (t0 + warmup)


def settle(busy_below: float = 0.3, max_seconds: float = 60.0) -> float:
    """Wait until the machine is quiet (all its CPUs less than ``busy_below`` busy over half
    a second), as a server is after its start-up: Ray starts its agents and workers for a
    while after it answers. Returns the seconds waited (``max_seconds`` at most)."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_seconds:
        total0, idle0 = sample()
        time.sleep(0.5)
        total1, idle1 = sample()
        if total1 > total0 and 1 - (idle1 - idle0) / (total1 - total0) < busy_below:
            break
    return time.perf_counter() - t0
