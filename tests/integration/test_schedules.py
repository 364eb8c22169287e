"""Schedules through the real stack (gRPC server, PostgreSQL, Ray): the guide's weekly cron,
per-second firings shared by two servers (one job per firing), the catch-up rule after a
downtime, rolling windows, pause/resume/run now/delete, and clear errors."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from client import AsyncTrainingClient, ConfigValidationError, NotFoundError, QuotaExceededError, pb
from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from server.operations.scheduler import Scheduler
from storage import db
from storage.tenancy import Scope
from tests.conftest import load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


def rolling(**overrides) -> dict:
    config = tiny_config(**overrides)
    config.pop("training_start")
    config.pop("training_end")
    return config


async def scheduled_jobs(client: AsyncTrainingClient, schedule_id: str, tenant: str = "acme-corp") -> list[pb.TrainingJob]:
    return list((await client.list_jobs(tenant, schedule_id=schedule_id, page_size=1000)).jobs)


async def test_the_guides_weekly_schedule_is_stored_with_its_next_firing(start_app, database_url):
    app = await start_app(dispatch=False)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        made = await client.create_schedule("acme-corp", "forecast", tiny_config(), "0 2 * * 0", name="weekly retrain")
        assert made.schedule == "0 2 * * 0" and made.timezone == "UTC" and not made.paused
        assert made.priority == pb.HIGH  # the guide: scheduled retraining is high
        assert made.action == ops_pb.TRAIN
        nxt = made.next_fire_at.ToDatetime(tzinfo=UTC)
        assert nxt > datetime.now(UTC) and nxt.weekday() == 6 and (nxt.hour, nxt.minute) == (2, 0)
        assert made.config.training_start == "2024-03-01T00:00:00" and made.config.algorithm == "lgbm"
        listed = await client.list_schedules("acme-corp")
        assert [s.schedule_id for s in listed] == [made.schedule_id]
        assert (await client.get_schedule(made.schedule_id)).name == "weekly retrain"


async def test_bad_schedules_are_refused_naming_the_field(start_app, database_url):
    app = await start_app(dispatch=False)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        cases = [
            ({"schedule": "0 2 * *"}, "schedule"),
            ({"schedule": "0 2 * * 0", "timezone": "Mars/Olympus"}, "timezone"),
            ({"schedule": "0 2 * * 0", "window": "P1Y"}, "window"),
            ({"schedule": "0 2 * * 0", "window": "P30D", "config": tiny_config()}, "config.training_start"),
            ({"schedule": "0 2 * * 0", "config": tiny_config(algorithm="gbdt")}, "algorithm"),
        ]
        for overrides, field in cases:
            kwargs = {"config": tiny_config(), **overrides}
            config = kwargs.pop("config")
            cron = kwargs.pop("schedule")
            with pytest.raises(ConfigValidationError) as err:
                await client.create_schedule("acme-corp", "forecast", config, cron, **kwargs)
            assert any(field in name for name, _ in err.value.violations), (field, err.value.violations)
        with pytest.raises(NotFoundError):
            await client.get_schedule("00000000-0000-0000-0000-000000000000")


async def test_per_second_firings_across_two_servers_make_one_job_each(start_app, database_url, demo_frame):
    """Two servers (replicas) fire one schedule every second for a few seconds: every
    firing time has exactly one job; they carry the schedule, its priority and a rolling window."""
    await load_demo(database_url, demo_frame)
    first = await start_app(dispatch=False, scheduler_interval_seconds=0.2)
    second = await start_app(dispatch=False, scheduler_interval_seconds=0.2)
    async with AsyncTrainingClient(f"127.0.0.1:{first.port}") as client:
        await client.update_quota("acme-corp", min_schedule_interval_seconds=1)  # per-second firings need a grant
        made = await client.create_schedule("acme-corp", "forecast", rolling(), "* * * * * *", window="P30D", priority="low")
        deadline = time.monotonic() + 60
        while len(await scheduled_jobs(client, made.schedule_id)) < 4:  # four firings, however busy the machine
            assert time.monotonic() < deadline, "the schedule did not fire four times in 60 s"
            await asyncio.sleep(0.1)
        await client.pause_schedule(made.schedule_id)
        # Until every firing the servers counted has committed its job (one under way may finish after the pause).
        while len(found := await scheduled_jobs(client, made.schedule_id)) != first.scheduler.fired + second.scheduler.fired:
            assert time.monotonic() < deadline, "a counted firing made no job"
            await asyncio.sleep(0.1)
        times = [j.scheduled_for.ToDatetime(tzinfo=UTC) for j in found]
        assert len(found) >= 3, len(found)
        assert max(Counter(times).values()) == 1  # one job per firing
        assert sorted(times) == [min(times) + timedelta(seconds=i) for i in range(len(times))]  # none skipped
        assert first.scheduler.fired + second.scheduler.fired == len(found)
        job = found[0]
        assert job.schedule_id == made.schedule_id and job.priority == pb.LOW and job.status == pb.PENDING
        at = job.scheduled_for.ToDatetime(tzinfo=UTC)
        assert job.config.training_end == at.strftime("%Y-%m-%dT%H:%M:%S")  # the canonical form: UTC, no offset
        assert job.config.training_start == (at - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
        lateness = first.scheduler.lateness + second.scheduler.lateness
        # Fired in the pass after its time (poll interval 0.2 s plus a transaction), not a second late;
        # the median, so that one pass delayed by a loaded machine does not fail the test.
        assert statistics.median(lateness) < 1.0, lateness
        shown = await client.get_schedule(made.schedule_id)
        assert len(shown.recent_jobs) == min(10, len(found)) and shown.last_fired_at.ToDatetime(tzinfo=UTC) == max(times)


async def test_a_downtime_is_caught_up_once_and_a_restart_never_fires_twice(start_app, database_url):
    app = await start_app(dispatch=False, scheduler_interval_seconds=3600)  # its own loop stays out of the way
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        made = await client.create_schedule("acme-corp", "forecast", tiny_config(), "0 2 * * *")
        # Every server was down for three days and a half: three or four 02:00 firings passed.
        now = datetime.now(UTC)
        missed_since = (now - timedelta(days=3, hours=12)).replace(minute=0, second=0, microsecond=0)
        async with db.transaction(app.engine, Scope.ALL) as conn:
            await conn.execute(
                db.sql("UPDATE schedules SET next_fire_at = :t WHERE id = :id"), {"t": Cron_next(missed_since), "id": made.schedule_id}
            )
        # Two servers come back at the same moment.
        one, two = Scheduler(app.engine), Scheduler(app.engine)
        fired = await asyncio.gather(one.fire_due(), two.fire_due())
        assert sum(fired) == 1
        jobs = await scheduled_jobs(client, made.schedule_id)
        assert len(jobs) == 1
        latest = now.replace(hour=2, minute=0, second=0, microsecond=0)
        latest = latest if latest <= now else latest - timedelta(days=1)
        assert jobs[0].scheduled_for.ToDatetime(tzinfo=UTC) == latest  # the most recent firing, not the first missed
        shown = await client.get_schedule(made.schedule_id)
        passed = (latest - Cron_next(missed_since)).days + 1
        assert passed in (3, 4)
        assert shown.missed_firings == passed - 1 and shown.next_fire_at.ToDatetime(tzinfo=UTC) == latest + timedelta(days=1)
        # A restarted server (a new scheduler) finds nothing due: no second job.
        assert await Scheduler(app.engine).fire_due() == 0
        assert len(await scheduled_jobs(client, made.schedule_id)) == 1


def Cron_next(moment: datetime) -> datetime:  # noqa: N802 - the first 02:00 at or after moment
    from server.operations.cron import Cron

    return Cron("0 2 * * *").next_after(moment - timedelta(seconds=1))


async def test_pause_resume_run_now_and_delete(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        made = await client.create_schedule("acme-corp", "forecast", tiny_config(), "0 2 * * 0", paused=True)
        assert made.paused
        resumed = await client.resume_schedule(made.schedule_id)
        assert not resumed.paused and resumed.next_fire_at.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
        ran = await client.run_schedule(made.schedule_id)
        assert ran.job.schedule_id == made.schedule_id and ran.job.priority == pb.HIGH
        assert ran.schedule.next_fire_at == resumed.next_fire_at  # run now leaves the cron's next firing
        done = await asyncio.wait_for(client.wait(ran.job.job_id), 120)
        assert done.status == pb.COMPLETED and done.model_version >= 1
        shown = await client.get_schedule(made.schedule_id)
        assert [(j.job_id, j.status) for j in shown.recent_jobs] == [(ran.job.job_id, pb.COMPLETED)]
        paused = await client.pause_schedule(made.schedule_id)
        assert paused.paused
        await client.delete_schedule(made.schedule_id)
        with pytest.raises(NotFoundError):
            await client.get_schedule(made.schedule_id)
        kept = await client.get_job(ran.job.job_id)  # its jobs stay
        assert kept.status == pb.COMPLETED and kept.schedule_id == ""


async def test_schedules_are_bounded_by_the_tenants_quotas(start_app, database_url, demo_frame):
    """A cron firing more often than min_schedule_interval_seconds (default 5 minutes) is a
    429 naming the limit, unless an admin grants a shorter one; firings past
    max_scheduled_jobs_per_day are skipped (counted missed), and a manual run is a 429."""
    await load_demo(database_url, demo_frame, "umbrella")
    app = await start_app(dispatch=False, scheduler_interval_seconds=0.2)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        assert (await client.get_quota("umbrella")).min_schedule_interval_seconds == 300
        for cron in ("* * * * * *", "* * * * *", "*/4 * * * *", "0,1 2 * * *"):
            with pytest.raises(QuotaExceededError) as err:
                await client.create_schedule("umbrella", "forecast", tiny_config(), cron)
            assert err.value.details["limit"] == "min_schedule_interval_seconds", cron
        await client.create_schedule("umbrella", "forecast", tiny_config(), "*/5 * * * *", paused=True)  # every 5 minutes: allowed
        await client.update_quota("umbrella", min_schedule_interval_seconds=1, max_scheduled_jobs_per_day=3)
        made = await client.create_schedule("umbrella", "forecast", rolling(), "* * * * * *", window="P30D", priority="low")
        deadline = time.monotonic() + 60
        while (shown := await client.get_schedule(made.schedule_id)).missed_firings < 2:
            assert time.monotonic() < deadline, "the schedule's firings past the daily quota were not counted missed"
            await asyncio.sleep(0.2)
        await client.pause_schedule(made.schedule_id)
        assert len(await scheduled_jobs(client, made.schedule_id, "umbrella")) == 3  # the quota, not one more
        with pytest.raises(QuotaExceededError) as err:
            await client.run_schedule(made.schedule_id)
        assert err.value.details["limit"] == "max_scheduled_jobs_per_day"
    assert shown.missed_firings >= 2
