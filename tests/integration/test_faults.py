"""Failure modes through the real stack (issue 10): a PostgreSQL that stops under a running
server, a job past its time limit, a server that drains, a request_id reused with another
request. The PostgreSQL stopped here is this module's own, never the session's."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import grpc
import pytest
import pytest_asyncio

from client import AlreadyExistsError, AsyncTrainingClient, ConfigValidationError, UnavailableError, pb
from storage import db, jobs
from storage.embedded import EmbeddedPostgres
from storage.tenancy import Scope
from tests.conftest import load_demo, slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory):
    """A PostgreSQL of this module's own, which the tests stop and start."""
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("faults-pg") / "data")
    url = pg.start()
    db.migrate(url)
    yield pg, url
    with contextlib.suppress(Exception):
        pg.restart()
    pg.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def own_db(own_pg, demo_frame):
    pg, url = own_pg
    name = f"faults_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    from sqlalchemy.engine import make_url

    test_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(db.migrate, test_url)
    await load_demo(test_url, demo_frame)
    yield pg, test_url
    if not _running(pg):
        await asyncio.to_thread(pg.restart)


def _running(pg: EmbeddedPostgres) -> bool:
    try:
        pg.pg_ctl("status")
        return True
    except Exception:  # noqa: BLE001 - pg_ctl status exits 3 when stopped
        return False


async def _until_running(client: AsyncTrainingClient, job_id: str, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.05)):
        if (await client.get_job(job_id)).status == pb.RUNNING:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} did not start within {timeout:.0f} s")


async def _reason(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except UnavailableError as exc:
        return exc.code, exc.reason
    except Exception as exc:  # noqa: BLE001 - the test reports what came instead
        return getattr(exc, "code", None), f"{type(exc).__name__}: {exc}"
    return grpc.StatusCode.OK, ""


async def test_a_database_shutting_down_is_unavailable_not_internal(own_db, start_app):
    """'the database system is shutting down' (SQLSTATE 57P03) is UNAVAILABLE with reason
    DatabaseUnavailable, for unary calls and for a stream opened then."""
    pg, url = own_db
    app = await start_app(url=url, dispatch=False)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.create_job("acme-corp", "forecast", tiny_config())
        holder = await asyncpg.connect(db.asyncpg_dsn(url))  # a smart shutdown waits for it: PostgreSQL stays "shutting down"
        try:
            await asyncio.to_thread(pg.pg_ctl, "-m", "smart", "-W", "stop")
            await app.engine.dispose()  # the next call needs a new connection, which PostgreSQL refuses
            for _ in range(50):
                try:
                    await asyncpg.connect(db.asyncpg_dsn(url), timeout=2)
                except asyncpg.exceptions.CannotConnectNowError:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("PostgreSQL never refused a connection as shutting down")
            assert await _reason(client.get_job(job.job_id)) == (grpc.StatusCode.UNAVAILABLE, "DatabaseUnavailable")

            async def first_log_line():
                async for line in client.stream_logs(job.job_id, follow=False):
                    return line
                return None

            assert await _reason(first_log_line()) == (grpc.StatusCode.UNAVAILABLE, "DatabaseUnavailable")
        finally:
            await holder.close()
        await asyncio.to_thread(pg.pg_ctl, "-w", "-m", "fast", "stop")  # the event listener's session keeps a smart stop waiting
        await asyncio.to_thread(pg.restart)
        for _ in range(50):  # back: the same client gets answers again
            with contextlib.suppress(UnavailableError):
                assert (await client.get_job(job.job_id)).job_id == job.job_id
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the service did not answer again after PostgreSQL came back")


async def test_a_run_that_ends_during_an_outage_is_recorded_when_the_database_is_back(own_db, start_app):
    """PostgreSQL stops while a job runs, for longer than its lease: the job is not lost,
    not requeued, and ends COMPLETED as attempt 1 once the database is back."""
    pg, url = own_db
    app = await start_app(url=url, lease_seconds=1.5, poll_interval_seconds=0.3)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.create_job("acme-corp", "forecast", tiny_config(hyperparameters={"n_estimators": 400, "num_leaves": 15}))
        await _until_running(client, job.job_id)
        await asyncio.to_thread(pg.pg_ctl, "-w", "-m", "fast", "stop")
        await asyncio.sleep(6)  # four leases
        await asyncio.to_thread(pg.restart)
        done = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(UnavailableError):
                done = await client.get_job(job.job_id)
                if done.status in (pb.COMPLETED, pb.FAILED, pb.CANCELLED):
                    break
            await asyncio.sleep(0.3)
        assert done is not None and done.status == pb.COMPLETED, done
        assert done.attempt == 1, "the job was requeued although its server never stopped"
        lines = [line.message async for line in client.stream_logs(job.job_id, follow=False)]
        assert not any("lease expired" in line for line in lines), lines


async def test_a_job_past_its_time_limit_fails_with_timeout(client, app):
    job = await client.create_job("acme-corp", "forecast", slow_config(max_runtime_seconds=3))
    assert job.config.max_runtime_seconds == 3
    done = await asyncio.wait_for(client.wait(job.job_id), 120)
    assert done.status == pb.FAILED and done.error.reason == "Timeout", done
    assert done.error.details["max_runtime_seconds"] == "3" and not done.HasField("next_retry_at")
    assert 3 <= done.finished_at.ToDatetime().timestamp() - done.started_at.ToDatetime().timestamp() < 15
    # Above the server's cap: refused at create, naming the field.
    with pytest.raises(ConfigValidationError) as err:
        await client.create_job("acme-corp", "forecast", tiny_config(max_runtime_seconds=10**8))
    assert [field for field, _ in err.value.violations] == ["max_runtime_seconds"]


async def test_request_id_reused_with_another_request_is_already_exists(client):
    first = await client.create_job("acme-corp", "forecast", tiny_config(), request_id="nightly-2024-06-01")
    again = await client.create_job("acme-corp", "forecast", tiny_config(), request_id="nightly-2024-06-01")
    assert again.job_id == first.job_id
    with pytest.raises(AlreadyExistsError) as err:
        await client.create_job("acme-corp", "forecast", tiny_config(random_seed=7), request_id="nightly-2024-06-01")
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS and err.value.reason == "RequestIdReused"
    assert err.value.details["job_id"] == first.job_id and first.job_id in err.value.message
    with pytest.raises(AlreadyExistsError):
        await client.create_job("acme-corp", "forecast", tiny_config(), request_id="nightly-2024-06-01", priority="high")


async def test_a_draining_server_lets_its_job_finish_then_hands_back_the_rest(start_app, database_url, demo_frame, caplog):
    await load_demo(database_url, demo_frame)
    app = await start_app(poll_interval_seconds=0.3)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        short = await client.create_job("acme-corp", "forecast", tiny_config(hyperparameters={"n_estimators": 300, "num_leaves": 15}))
        await _until_running(client, short.job_id)
        drain = asyncio.ensure_future(app.drain(60))
        await asyncio.sleep(0.2)
        health = await app.health.Check(_health_request(""), None)
        assert health.status == _NOT_SERVING  # load balancers stop sending calls here
        queued = await client.create_job("acme-corp", "forecast", tiny_config())  # still answered, but not claimed
        await asyncio.wait_for(drain, 60)
        assert (await client.get_job(short.job_id)).status == pb.COMPLETED
        assert (await client.get_job(short.job_id)).attempt == 1
        assert (await client.get_job(queued.job_id)).status == pb.PENDING

    # A job that outlasts the drain is handed back without using a retry.
    app2 = await start_app(poll_interval_seconds=0.3)
    async with AsyncTrainingClient(f"127.0.0.1:{app2.port}") as client:
        long = await client.create_job("acme-corp", "forecast", slow_config())
        await _until_running(client, long.job_id)
        await app2.drain(0.5)
        with caplog.at_level("INFO", logger="server.execution.dispatcher"):
            await app2.dispatcher.stop()
        async with db.transaction(app2.engine, Scope.ALL) as conn:
            handed = await jobs.get(conn, uuid.UUID(long.job_id))
        assert handed.status.value in ("PENDING", "RUNNING") and handed.attempt == 2
        assert handed.failed_attempts == 1  # the hand-back is not one of its retries
        said = [r.getMessage() for r in caplog.records if r.name == "server.execution.dispatcher"]
        assert "attempt 1: handed back to the queue (server stopping)" in said, said
        assert "attempt 1: CANCELLED" not in said  # it was given back, not cancelled
        await client.cancel_job(long.job_id)


_NOT_SERVING = 2


def _health_request(service: str):
    from grpc_health.v1 import health_pb2

    return health_pb2.HealthCheckRequest(service=service)
