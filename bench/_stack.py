"""A private stack for benchmarks: embedded PostgreSQL in a temp folder, a local Ray and
the gRPC server in this process, exactly as `make run` wires them."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from server.api.app import App
from server.lifecycle import tune_gc
from server.settings import Settings
from storage import db, features, tenants
from storage.embedded import EmbeddedPostgres
from storage.records import Priority
from storage.tenancy import Scope

# A job that only has to exist (the latency benchmarks read it; nothing runs it).
READ_ONLY_JOB = {
    "model_type": "forecast",
    "algorithm": "lgbm",
    "features": ["temperature"],
    "target": "load",
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-02-01T00:00:00",
}


@contextlib.asynccontextmanager
async def stack(**settings) -> AsyncIterator[App]:
    with tempfile.TemporaryDirectory(prefix="aihub-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "postgres")
        url = pg.start()
        app = App(Settings(_env_file=None, database_url=url, data_dir=Path(tmp), grpc_port=0, **{"auth": "off", **settings}), url)
        await app.start()
        tune_gc()  # as python -m server does
        try:
            yield app
        finally:
            await app.stop(grace=0)
            app.executor.stop()
            pg.stop()


async def load(app: App, tenant: str, table: str, frame) -> None:
    async with db.transaction(app.engine, Scope.of(tenant)) as conn:
        await tenants.update(conn, tenant, {"max_priority": Priority.CRITICAL, "max_queued_jobs": 100_000})
        await features.import_frame(conn, table, frame)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def open_loop(call, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """Offer ``await call()`` at a fixed rate (open loop: each latency counts from the
    request's scheduled send time). Returns (latencies, errors, elapsed seconds)."""
    import asyncio
    import time

    latencies: list[float] = []
    errors = 0
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.1

    async def one(at: float) -> None:
        nonlocal errors
        try:
            await call()
            latencies.append(time.perf_counter() - at)
        except Exception:  # noqa: BLE001 - counted and reported
            errors += 1

    tasks = []
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - t0
