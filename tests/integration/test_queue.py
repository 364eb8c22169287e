"""The queue: priority order, several dispatchers on one database, restarts, leases."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
import pytest_asyncio

from client import AsyncTrainingClient, InvalidStateError, pb
from storage import db, jobs, logs, queue
from storage.records import JobStatus, NewJob, Priority
from storage.tenancy import DISPATCHER_ROLE, Scope
from tests.conftest import claim_one, cpus_free, load_demo, slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def engine(database_url):
    """An engine on this test's database (enough connections for 8 concurrent claimers)."""
    engine = db.create_engine(database_url, pool_size=8)
    yield engine
    await engine.dispose()


async def test_jobs_start_in_priority_order_then_oldest_first(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app(dispatch=False, max_concurrent_jobs=1)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        order = ["low", "normal", "high", "normal", "critical", "low", "high"]
        created = [(p, (await client.create_job("acme-corp", "forecast", tiny_config(), priority=p)).job_id) for p in order]
        app.dispatcher.pause(False)
        finished = [await asyncio.wait_for(client.wait(job_id), 120) for _, job_id in created]
    assert all(j.status == pb.COMPLETED for j in finished)
    started = [j.job_id for j in sorted(finished, key=lambda j: j.started_at.ToDatetime())]
    rank = {"critical": 0, "high": 1, "normal": 2, "low": 3}
    expected = [job_id for _, job_id in sorted(created, key=lambda pj: rank[pj[0]])]  # stable: oldest first
    assert started == expected


async def test_two_dispatchers_never_run_a_job_twice(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    a = await start_app(dispatch=False, server_id="server-a")
    b = await start_app(dispatch=False, server_id="server-b")
    async with AsyncTrainingClient(f"127.0.0.1:{a.port}") as client:
        ids = [
            (await client.create_job("acme-corp", "forecast", tiny_config(hyperparameters={"n_estimators": 3}))).job_id for _ in range(24)
        ]
        a.dispatcher.pause(False)
        b.dispatcher.pause(False)
        finished = await asyncio.wait_for(asyncio.gather(*(client.wait(i) for i in ids)), 240)
    assert all(j.status == pb.COMPLETED and j.attempt == 1 for j in finished)
    async with db.transaction(a.engine, Scope.ALL) as conn:
        rows = await conn.fetch(db.sql("SELECT job_id, claimed_by FROM job_attempts"))
        versions = await conn.one(db.sql("SELECT count(*), count(DISTINCT job_id) FROM model_versions"))
    per_job = Counter(job_id for job_id, _ in rows)
    assert len(per_job) == 24 and set(per_job.values()) == {1}  # each job ran exactly once
    assert tuple(versions) == (24, 24)
    assert {claimed_by for _, claimed_by in rows} <= {"server-a", "server-b"}


async def test_concurrent_claims_take_each_job_once(engine):
    async with db.transaction(engine, Scope.of("t")) as conn:
        for _ in range(40):
            await jobs.create(conn, NewJob("t", "forecast", "lgbm", Priority.NORMAL, {}, {}))

    async def claimer(name: str) -> list:
        got = []
        while True:
            async with db.transaction(engine, Scope.ALL) as conn:
                job = await claim_one(conn, name)
            if job is None:
                return got
            got.append(job.job_id)

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(8)))
    claimed = [j for r in results for j in r]
    assert len(claimed) == 40 and len(set(claimed)) == 40


async def test_restart_keeps_jobs_logs_and_metrics(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    first = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{first.port}") as client:
        job = await client.create_job("acme-corp", "forecast", tiny_config(), metadata={"k": "v"})
        before = await asyncio.wait_for(client.wait(job.job_id), 60)
        logs_before = [e async for e in client.stream_logs(job.job_id)]
    await first.stop(grace=0)
    second = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{second.port}") as client:
        after = await client.get_job(job.job_id)
        logs_after = [e async for e in client.stream_logs(job.job_id)]
        metrics = await client.get_metrics(job.job_id)
    assert after == before
    assert logs_after == logs_before
    assert metrics.mae == before.metrics["mae"]


async def test_a_stopping_server_hands_its_running_job_back(start_app, database_url, demo_frame, engine):
    await load_demo(database_url, demo_frame)
    first = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{first.port}") as client:
        job = await client.create_job("acme-corp", "forecast", slow_config())
        async for snap in client.watch_job(job.job_id):
            if snap.current_step == "training" and snap.progress > 20:
                break
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await first.stop(grace=0)
    # It hands the job back rather than waiting for it (the job has minutes to go): at most
    # the dispatcher's own wait for its tasks, with room for a loaded machine.
    assert loop.time() - t0 < first.dispatcher.stop_wait_seconds + 10
    # Queued again at once as the next attempt; the old attempt's Ray task stopped itself.
    assert await cpus_free(first, timeout=10)
    async with db.transaction(engine, Scope.ALL) as conn:
        again = await jobs.get(conn, uuid.UUID(job.job_id))
        lines = await logs.after(conn, uuid.UUID(job.job_id))
    assert again.status == JobStatus.PENDING and again.attempt == 2 and again.progress == 0
    assert "the server running attempt 1 is stopping; queued again as attempt 2" in [e.message for e in lines]
    second = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{second.port}") as client:
        async for snap in client.watch_job(job.job_id):
            if snap.status == pb.RUNNING and snap.attempt == 2:
                break
        await client.cancel_job(job.job_id)


async def test_queue_statements_use_their_indexes(database_url):
    # With sequential scans priced out, each statement the dispatcher runs on every pass
    # (as the dispatcher's role) is planned on a partial index (so a large job history
    # costs nothing): the running jobs' statements on either partial index of RUNNING rows.
    engine = db.create_engine(database_url, role=DISPATCHER_ROLE, pool_size=1)
    running = ("training_jobs_running", "training_jobs_tenant_active")
    try:
        async with db.transaction(engine) as conn:
            await conn.execute(db.sql("SET LOCAL enable_seqscan = off"))
            for stmt, params, indexes in [
                (queue.CLAIM_HEAD, {"candidates": 20}, ("training_jobs_tenant_queue",)),
                (queue.REQUEUE_EXPIRED, {"max_lost": 3}, running),
                (queue.FAIL_LOST, {"max_lost": 3}, running),
                (queue.RELEASE, {"server_id": "w"}, running),
                (queue.REQUEUE_DUE_RETRIES, {}, ("training_jobs_retry_due",)),
            ]:
                plan = [row[0] for row in await conn.fetch(db.sql("EXPLAIN " + stmt.text), params)]
                assert any(index in line for line in plan for index in indexes), "\n".join(plan)  # EXPLAIN alone runs nothing
    finally:
        await engine.dispose()


async def test_expired_lease_requeues_the_job_as_a_new_attempt(engine):
    async with db.transaction(engine, Scope.of("t")) as conn:
        job, _ = await jobs.create(conn, NewJob("t", "forecast", "lgbm", Priority.NORMAL, {}, {}))
        await claim_one(conn, "crashed-server", lease_seconds=0.05)
    await asyncio.sleep(0.2)
    async with db.transaction(engine, Scope.ALL) as conn:
        assert await queue.requeue_expired(conn) == ([job.job_id], [])
        again = await jobs.get(conn, job.job_id)
        # The old attempt can no longer write.
        assert not await queue.set_progress(conn, job.job_id, 1, "training", 50)
        assert not await queue.complete(conn, job.job_id, 1, 1)
    assert again.status == JobStatus.PENDING and again.attempt == 2
    # Not one of its retries: the retry budget counts only failed attempts.
    assert again.lost_leases == 1 and again.failed_attempts == 1


async def test_lost_leases_are_capped_then_the_job_fails_with_the_count(engine):
    """A job whose server is lost every time (it kills its worker) must not loop forever:
    after max_lost requeues the next lost lease FAILS it for good, reason WorkerLost."""
    async with db.transaction(engine, Scope.of("t")) as conn:
        job, _ = await jobs.create(conn, NewJob("t", "forecast", "lgbm", Priority.NORMAL, {}, {}))
    outcomes = []
    for _ in range(3):
        async with db.transaction(engine, Scope.ALL) as conn:
            assert await claim_one(conn, "doomed-server", lease_seconds=0.01) is not None
        await asyncio.sleep(0.05)
        async with db.transaction(engine, Scope.ALL) as conn:
            outcomes.append(await queue.requeue_expired(conn, max_lost=2))
    assert outcomes == [([job.job_id], []), ([job.job_id], []), ([], [job.job_id])]
    async with db.transaction(engine, Scope.ALL) as conn:
        final = await jobs.get(conn, job.job_id)
        history = await conn.fetch(
            db.sql("SELECT attempt, status, error_reason FROM job_attempts WHERE job_id = :id ORDER BY attempt"), {"id": job.job_id}
        )
        assert [tuple(r) for r in history] == [(1, "FAILED", "WorkerLost"), (2, "FAILED", "WorkerLost"), (3, "FAILED", "WorkerLost")]
        # A user's retry gives it a new cap.
        again = await jobs.retry(conn, job.job_id)
    assert final.status == JobStatus.FAILED and final.retry_at is None and final.attempt == 3
    assert final.error.reason == "WorkerLost" and final.error.details == {"lost_leases": "3", "max_lost_leases": "2"}
    assert "3 times" in final.error.message
    assert again.status == JobStatus.PENDING and again.lost_leases == 0


async def test_a_failure_that_may_pass_is_retried_with_backoff(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app(max_retries=2, retry_base_seconds=0.5, poll_interval_seconds=0.2)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        # More lookback than training rows: the LSTM fails in training, an error that is not
        # about data or configuration, so the retry policy applies.
        job = await client.create_job(
            "acme-corp", "forecast", tiny_config(algorithm="lstm", hyperparameters={"lookback": 720, "epochs": 1})
        )
        seen = []
        async for snap in client.watch_job(job.job_id):
            seen.append(snap)
            if snap.status == pb.FAILED and not snap.HasField("next_retry_at"):
                break
        final = seen[-1]
        logs = [e async for e in client.stream_logs(job.job_id, follow=False)]
    assert final.attempt == 3 and final.error.reason == "TrainingError"  # 1 + max_retries attempts
    planned = [s for s in seen if s.status == pb.FAILED and s.HasField("next_retry_at")]
    assert {s.attempt for s in planned} == {1, 2}
    messages = [e.message for e in logs]
    assert sum("automatic retry in" in m for m in messages) == 2
    assert "automatic retry in 0.5 s, as attempt 2" in messages and "automatic retry in 1 s, as attempt 3" in messages
    # the gaps follow the backoff: attempt 3 starts at least 1 s after attempt 2 failed
    fails = [e for e in logs if e.message.startswith("job failed")]
    starts = [e for e in logs if e.message.startswith("attempt 3 started")]
    assert (starts[0].time.ToDatetime() - fails[1].time.ToDatetime()).total_seconds() >= 1.0


async def test_data_errors_are_not_retried(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app(retry_base_seconds=0.2, poll_interval_seconds=0.2)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.create_job("acme-corp", "forecast", tiny_config(feature_table="missing"))
        failed = await asyncio.wait_for(client.wait(job.job_id), 60)
        await asyncio.sleep(1.0)
        again = await client.get_job(job.job_id)
    assert failed.status == pb.FAILED and not failed.HasField("next_retry_at")
    assert again.status == pb.FAILED and again.attempt == 1


async def test_cancel_stops_a_planned_retry(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app(retry_base_seconds=30, poll_interval_seconds=0.2)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.create_job(
            "acme-corp", "forecast", tiny_config(algorithm="lstm", hyperparameters={"lookback": 720, "epochs": 1})
        )
        async for snap in client.watch_job(job.job_id):
            if snap.status == pb.FAILED:
                break
        assert snap.HasField("next_retry_at")
        cancelled = await client.cancel_job(job.job_id)
        assert cancelled.status == pb.CANCELLED and not cancelled.HasField("next_retry_at")
        with pytest.raises(InvalidStateError):
            await client.cancel_job(job.job_id)
