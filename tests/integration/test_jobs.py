"""The job lifecycle through the real stack: gRPC server, PostgreSQL, Ray, LightGBM."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from urllib.parse import urlparse

import lightgbm as lgb
import numpy as np
import pytest

from client import ConfigValidationError, InvalidStateError, NotFoundError, pb
from storage import db, features, models
from storage.tenancy import Scope
from tests.conftest import QUICK_START_CONFIG, cpus_free, load_demo, slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def wait_final(client, job_id: str, timeout: float = 120) -> pb.TrainingJob:
    return await asyncio.wait_for(client.wait(job_id), timeout)


async def wait_until(client, job_id: str, pred, timeout: float = 60) -> pb.TrainingJob:
    async def go():
        async with aclosing(client.watch_job(job_id)) as stream:
            async for job in stream:
                if pred(job):
                    return job
        return await client.get_job(job_id)

    return await asyncio.wait_for(go(), timeout)


async def test_quick_start_trains_a_model_with_sane_metrics(client, app, demo_frame):
    job = await client.create_job("acme-corp", "forecast", QUICK_START_CONFIG, priority="high", metadata={"owner": "data-science-team"})
    assert job.status == pb.PENDING and job.progress == 0 and job.priority == pb.HIGH
    done = await wait_final(client, job.job_id)
    assert done.status == pb.COMPLETED, done.error
    assert done.progress == 100 and done.current_step == "registration" and done.model_version == 1
    m = await client.get_metrics(job.job_id)
    assert 0 < m.mae <= m.rmse
    assert 0.8 < m.r2_score <= 1.0
    assert 0 < m.mape < 10
    assert m.training_data_size == 8760  # 366 days minus the first 24 h of lags
    assert m.training_duration_seconds > 0
    assert done.metadata["owner"] == "data-science-team"
    assert done.started_at.ToDatetime() <= done.finished_at.ToDatetime()

    # A seasonal-naive forecast (same hour yesterday) on the same validation rows is clearly worse.
    y = demo_frame.set_index("timestamp")["load"]
    valid = y["2024-10-20":"2024-12-31"]
    naive_mae = float(np.mean(np.abs(valid.to_numpy() - y.shift(24).loc[valid.index].to_numpy())))
    assert m.mae < naive_mae / 2

    # The artifact is LightGBM's own text format and reproduces the stored metrics.
    async with db.transaction(app.engine, Scope.of("acme-corp")) as conn:
        (version,) = await models.list_versions(conn)
    path = Path(urlparse(version.artifact_uri).path)
    assert path.read_text().startswith("tree\nversion=")
    booster = lgb.Booster(model_file=str(path))
    assert booster.num_trees() == 100
    assert version.metrics["mae"] == pytest.approx(m.mae)


async def test_second_job_gets_the_next_model_version(client):
    first = await wait_final(client, (await client.create_job("acme-corp", "forecast", tiny_config())).job_id)
    second = await wait_final(client, (await client.create_job("acme-corp", "forecast", tiny_config())).job_id)
    assert (first.model_version, second.model_version) == (1, 2)


async def test_same_request_id_returns_the_same_job(client):
    a = await client.create_job("acme-corp", "forecast", tiny_config(), request_id="nightly-2024-06-01")
    b = await client.create_job("acme-corp", "forecast", tiny_config(), request_id="nightly-2024-06-01")
    c = await client.create_job("other-tenant", "forecast", tiny_config(), request_id="nightly-2024-06-01")
    assert a.job_id == b.job_id != c.job_id
    page = await client.list_jobs(tenant_id="acme-corp")
    assert [j.job_id for j in page.jobs] == [a.job_id]


async def test_cancel_a_running_job_stops_its_ray_task(client, app):
    job = await client.create_job("acme-corp", "forecast", slow_config())
    await wait_until(client, job.job_id, lambda j: j.current_step == "training" and j.progress > 20)
    cancelled = await client.cancel_job(job.job_id)
    assert cancelled.status == pb.CANCELLED
    # The Ray task is gone: its CPU comes back, and no further line is logged.
    assert await cpus_free(app, timeout=10)
    lines = [e async for e in client.stream_logs(job.job_id, follow=False)]
    await asyncio.sleep(1.0)
    assert [e async for e in client.stream_logs(job.job_id, follow=False)] == lines
    assert lines[-1].message == "job cancelled"
    final = await client.get_job(job.job_id)
    assert final.status == pb.CANCELLED and final.finished_at.seconds > 0
    with pytest.raises(InvalidStateError):
        await client.cancel_job(job.job_id)


async def test_cancels_landing_around_the_end_of_a_job_leave_one_consistent_outcome(client, app):
    # Cancels arrive at every moment around a job's end: while it trains, between
    # registering its model and completing, just after. (A forced ray.cancel here once
    # crashed the whole server process: Ray 2.60 fails a RAY_CHECK when the task is
    # just returning.) Each job ends one way, and the server keeps serving.
    loop = asyncio.get_running_loop()
    for _ in range(2):  # the second on a warm Ray worker
        job = await client.create_job("acme-corp", "forecast", tiny_config())
        await wait_until(client, job.job_id, lambda j: j.status != pb.PENDING)
        t0 = loop.time()
        await wait_final(client, job.job_id)
        duration = loop.time() - t0  # RUNNING -> COMPLETED as the client sees it
    outcomes = set()
    for i in range(16):
        job = await client.create_job("acme-corp", "forecast", tiny_config())
        await wait_until(client, job.job_id, lambda j: j.status != pb.PENDING)
        await asyncio.sleep(duration * 3 * i / 15)  # up to 3x the calibrated run: a loaded machine runs slower
        try:
            await client.cancel_job(job.job_id)
        except InvalidStateError:
            pass
        final = await wait_final(client, job.job_id)
        assert await cpus_free(app), "the Ray task did not end"
        versions = [v for v in await client.list_models("acme-corp", include_deleted=True) if v.job_id == job.job_id]
        live = [v for v in versions if not v.HasField("deleted_at")]
        if final.status == pb.COMPLETED:
            assert [v.version for v in live] == [final.model_version]
        else:
            assert final.status == pb.CANCELLED and not live and final.model_version == 0
            lines = [e async for e in client.stream_logs(job.job_id, follow=False)]
            assert lines[-1].message == "job cancelled"
        outcomes.add(final.status)
    assert outcomes == {pb.COMPLETED, pb.CANCELLED}
    assert (await client.health()).status == "ok"


async def test_cancel_a_pending_job(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app(dispatch=False)
    from client import AsyncTrainingClient

    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.create_job("acme-corp", "forecast", tiny_config())
        assert (await client.cancel_job(job.job_id)).status == pb.CANCELLED
        app.dispatcher.pause(False)
        await asyncio.sleep(1.5)
        assert (await client.get_job(job.job_id)).status == pb.CANCELLED


async def test_retry_a_failed_job_runs_a_new_attempt(client, app, demo_frame):
    job = await client.create_job("acme-corp", "forecast", tiny_config(feature_table="grid_2024"))
    failed = await wait_final(client, job.job_id)
    assert failed.status == pb.FAILED
    assert failed.error.reason == "DataLoadError"
    assert "features.grid_2024" in failed.error.message
    assert failed.error.details["tenant_id"] == "acme-corp"
    # The user fixes the data, then retries.
    async with db.transaction(app.engine, Scope.of("acme-corp")) as conn:
        await features.import_frame(conn, "grid_2024", demo_frame)
    retried = await client.retry_job(job.job_id)
    assert retried.status == pb.PENDING and retried.attempt == 2 and not retried.error.reason
    done = await wait_final(client, job.job_id)
    assert done.status == pb.COMPLETED and done.attempt == 2
    with pytest.raises(InvalidStateError) as err:
        await client.retry_job(job.job_id)
    assert "COMPLETED" in err.value.message
    attempts = {e.attempt for e in [e async for e in client.stream_logs(job.job_id)]}
    assert attempts == {1, 2}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"feature_table": "no_such_table"}, "Table not found: features.no_such_table"),
        ({"features": ["temperature", "wind_speed"]}, "features.load_forecasting.wind_speed"),
        ({"training_start": "1990-01-01T00:00:00", "training_end": "1990-12-31T23:59:59"}, "No rows in features.load_forecasting"),
    ],
)
async def test_missing_data_fails_with_data_load_error(client, overrides, needle):
    job = await client.create_job("acme-corp", "forecast", tiny_config(**overrides))
    failed = await wait_final(client, job.job_id)
    assert failed.status == pb.FAILED
    assert failed.error.reason == "DataLoadError"
    assert needle in failed.error.message
    assert failed.current_step == "data_loading"


async def test_update_priority_of_pending_job_only(client, app):
    app.dispatcher.pause()
    job = await client.create_job("acme-corp", "forecast", tiny_config(), priority="low")
    updated = await client.update_job(job.job_id, priority="critical")
    assert updated.priority == pb.CRITICAL
    app.dispatcher.pause(False)
    await wait_final(client, job.job_id)
    with pytest.raises(InvalidStateError):
        await client.update_job(job.job_id, priority="low")
    with pytest.raises(ConfigValidationError) as err:
        await client.update_job(job.job_id, priority=0)
    assert err.value.violations[0][0] == "priority"


async def test_unknown_job_is_not_found(client):
    with pytest.raises(NotFoundError):
        await client.get_job("550e8400-e29b-41d4-a716-446655440000")
    with pytest.raises(ConfigValidationError) as err:
        await client.get_job("not-a-uuid")
    assert err.value.violations == [("job_id", "'not-a-uuid' is not a job id (a UUID)")]


async def test_list_filters_and_pages_newest_first(client, app):
    app.dispatcher.pause()
    ids = [(await client.create_job("acme-corp", "forecast", tiny_config())).job_id for _ in range(5)]
    other = await client.create_job("globex", "forecast", tiny_config())
    seen, token = [], ""
    while True:
        page = await client.list_jobs(tenant_id="acme-corp", status="PENDING", page_size=2, page_token=token)
        assert len(page.jobs) <= 2
        seen += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    assert other.job_id not in seen
    assert [j.job_id for j in (await client.list_jobs(status="COMPLETED")).jobs] == []
    with pytest.raises(ConfigValidationError):
        await client.list_jobs(page_token="garbage!")
