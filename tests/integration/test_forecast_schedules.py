"""Models at work, unattended, through the real stack (gRPC, PostgreSQL, Ray, a webhook
receiver on loopback): the morning run (a schedule forecasts from the production alias into
the forecast store, once per firing, and says so by webhook), and champion/challenger (a
schedule trains a challenger and moves the alias only when it wins on the same window)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import pytest_asyncio

from client import AsyncTrainingClient, ConfigValidationError, pb
from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from server import demo_data
from storage import db, features
from storage.tenancy import Scope
from tests.conftest import load_demo
from tests.integration.test_forecast_api import DAY_AHEAD
from tests.integration.test_operations import SECRET, Receiver, until

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = "acme-corp"


async def _task(client, schedule_id: str, kind: str, count: int = 1):
    async def finished():
        shown = await client.get_schedule(schedule_id)
        done = [c for c in shown.recent_checks if c.kind == kind and c.status in ("DONE", "FAILED")]
        return done if len(done) >= count else None

    return await until(finished, 180)


@pytest_asyncio.fixture(loop_scope="session")
async def served(start_app, database_url, demo_frame):
    """Two servers on one database with the demo data (replicas: each firing's task must run
    once), their firing tasks polled often, and a webhook receiver."""
    await load_demo(database_url, demo_frame)
    app = await start_app(alert_allow_private_targets=True, alert_retry_base_seconds=0.2)
    replica = await start_app(alert_allow_private_targets=True, alert_retry_base_seconds=0.2)
    app.checker.interval = replica.checker.interval = 0.2
    receiver = Receiver()
    yield app, receiver
    receiver.close()


async def test_the_morning_run_writes_the_forecast_store_once_and_alerts(served):
    app, receiver = served
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.wait((await client.create_job(T, "forecast", DAY_AHEAD)).job_id)
        assert job.status == pb.COMPLETED
        (version,) = await client.list_models(T)
        await client.set_alias("production", version.model_id)
        await client.create_alert_target(T, receiver.url, events=["forecast_ready"], secret=SECRET)
        # 05:00: tomorrow's weather forecast is imported (no load: it has not happened).
        hours = pd.date_range("2025-01-01T00:00:00", periods=24, freq="h", tz="UTC")
        weather = pd.DataFrame({"timestamp": hours, "temperature": 3.0, "humidity": 70.0})
        async with db.transaction(app.engine, Scope.of(T)) as conn:
            await features.import_frame(conn, demo_data.TABLE, weather)
        with pytest.raises(ConfigValidationError) as err:
            await client.create_schedule(T, "forecast", None, "30 5 * * *", action="forecast")
        assert err.value.violations[0][0] == "alias"
        made = await client.create_schedule(
            T, "forecast", None, "30 5 * * *", action="forecast", alias="production", timezone="Europe/Berlin"
        )
        assert made.action == ops_pb.SCHEDULE_ACTION_FORECAST and made.alias == "production"
        # 05:30: the firing (run now, as the cron would).
        await client.run_schedule(made.schedule_id)
        (task,) = await _task(client, made.schedule_id, "forecast")
        assert task.status == "DONE" and task.metrics["points"] == 24 and task.alias == "production", task
        stored = await client.list_forecasts(T, alias="production")
        assert len(stored.points) == 24 and not stored.next_page_token
        assert {p.origin.ToDatetime(tzinfo=UTC) for p in stored.points} == {datetime(2024, 12, 31, 23, tzinfo=UTC)}
        assert all(p.model_id == version.model_id and p.schedule_id == made.schedule_id for p in stored.points)
        direct = await client.forecast(alias="production", tenant_id=T)
        assert [p.forecast for p in stored.points] == [p.forecast for p in direct.points]
        # A second firing for the same origin writes the same rows again, not new ones.
        await client.run_schedule(made.schedule_id)
        await _task(client, made.schedule_id, "forecast", count=2)
        assert len((await client.list_forecasts(T, alias="production")).points) == 24
        page = await client.list_forecasts(T, alias="production", page_size=10)
        rest = await client.list_forecasts(T, alias="production", page_size=100, page_token=page.next_page_token)
        assert len(page.points) == 10 and len(rest.points) == 14
        assert len((await client.list_forecasts(T, start="2025-01-01T12:00:00")).points) == 12
        assert (await client.list_forecasts(T, alias="staging")).points == []
        await until(lambda: asyncio.sleep(0, result=len(receiver.bodies("forecast_ready")) >= 2), 30)
        await asyncio.sleep(1.0)  # time for a second delivery of a firing, were there one
        assert len(receiver.bodies("forecast_ready")) == 2  # two firings, two alerts: once each across the replicas
    first = receiver.bodies("forecast_ready")[0]
    assert first["schedule_id"] == made.schedule_id and first["model_id"] == version.model_id and first["origin"] == "2024-12-31T23:00:00Z"
    assert first["reason"] == "ForecastReady" and "alias=production" in first["link"]


async def test_champion_challenger_moves_the_alias_only_when_the_challenger_wins(served):
    app, receiver = served
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        # The champion learnt last March; the last 90 days have arrived since, 30 % higher.
        champion = await client.wait((await client.create_job(T, "forecast", DAY_AHEAD)).job_id)
        (v1,) = await client.list_models(T)
        await client.set_alias("production", v1.model_id, reason="first model")
        now = datetime.now(UTC)
        recent = demo_data.generate(f"{now - timedelta(days=90):%Y-%m-%d %H:00}", f"{now:%Y-%m-%d %H:00}")
        recent["load"] *= 1.3
        async with db.transaction(app.engine, Scope.of(T)) as conn:
            await features.import_frame(conn, demo_data.TABLE, recent)
        await client.create_alert_target(T, receiver.url, events=["promotion"], secret=SECRET)
        config = {k: v for k, v in DAY_AHEAD.items() if k not in ("training_start", "training_end")}
        with pytest.raises(ConfigValidationError) as err:
            await client.create_schedule(T, "forecast", config, "0 3 * * 0", action="train_and_promote", alias="production")
        assert err.value.violations[0][0] == "window"
        bold = await client.create_schedule(
            T, "forecast", config, "0 3 * * 0", window="P60D", action="train_and_promote", alias="production",
            promotion={"window": "P7D", "min_improvement": 0.05},
        )  # fmt: skip
        ran = await client.run_schedule(bold.schedule_id)
        (task,) = await _task(client, bold.schedule_id, "promotion")
        assert task.status == "DONE" and task.promoted and task.job_id == ran.job.job_id, task
        assert task.metrics["mae"] < 0.95 * task.baseline["mae"] and "promoted" in task.message
        aliases = {a.alias: a for a in await client.list_aliases(T)}
        assert aliases["production"].model_version == 2 and aliases["production"].moves[0].moved_by == f"schedule:{bold.schedule_id}"
        challenger = await client.get_job(ran.job.job_id)
        assert challenger.config.training_end < (now - timedelta(days=6)).strftime("%Y-%m-%dT%H")  # it never saw the scoring window
        # A challenger that must be 90 % better does not take the alias; the decision is kept and alerted.
        strict = await client.create_schedule(
            T, "forecast", config, "0 3 * * 0", window="P60D", action="train_and_promote", alias="production",
            promotion={"min_improvement": 0.9},
        )  # fmt: skip
        await client.run_schedule(strict.schedule_id)
        (kept,) = await _task(client, strict.schedule_id, "promotion")
        assert kept.status == "DONE" and kept.promoted is False and "kept the champion" in kept.message, kept
        assert (await client.list_aliases(T))[0].model_version == 2
        # A degradation check that names the alias scores its version (not the newest: v3), and says so.
        watch = await client.create_schedule(T, "forecast", config, "0 6 * * *", window="P60D", action="evaluate", alias="production")
        await client.run_schedule(watch.schedule_id)
        (check,) = await _task(client, watch.schedule_id, "degradation")
        v2 = next(v for v in await client.list_models(T) if v.version == 2)
        assert check.status == "DONE" and check.model_id == v2.model_id and check.message.startswith("alias production (v2): ")
        await until(lambda: asyncio.sleep(0, result=len(receiver.bodies("promotion")) >= 2), 30)
        await asyncio.sleep(1.0)
        moves = (await client.list_aliases(T))[0].moves  # the first model, then the one promotion: once across the replicas
        assert len(receiver.bodies("promotion")) == 2 and [m.to_version for m in moves] == [2, 1], moves
    decisions = {b["schedule_id"]: b for b in receiver.bodies("promotion")}
    assert decisions[bold.schedule_id]["promoted"] is True and decisions[strict.schedule_id]["promoted"] is False
    assert decisions[bold.schedule_id]["champion_model_id"] == v1.model_id and champion.status == pb.COMPLETED
