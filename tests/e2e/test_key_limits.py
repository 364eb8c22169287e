"""Keys and streams within bounds, through the real stack (gRPC + PostgreSQL + Ray): a key
made while authentication is off is refused once it is required; a client whose key
lookups keep failing gets 429 RateLimited (and a WARNING) while known keys keep working;
one tenant's, and one key's, open log and watch streams are capped with 429 QuotaExceeded
naming the limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import pytest

from client import AsyncTrainingClient, pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from tests.conftest import load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN_KEY = "limits-admin-" + "q" * 40


async def test_a_key_made_with_authentication_off_is_refused_once_it_is_required(start_app, database_url):
    off = await start_app(dispatch=False)  # AIHUB_AUTH=off: any local caller may make keys
    async with AsyncTrainingClient(f"127.0.0.1:{off.port}") as anyone:
        made = await anyone.create_key("", admin=True, name="made while open")
        (listed,) = [k for k in await anyone.list_keys() if k.key_id == made.key_id]
        assert listed.local
    async with AsyncTrainingClient(f"127.0.0.1:{off.port}", api_key=made.key) as c:
        await c.list_jobs()  # while authentication is off it works as before
    required = await start_app(dispatch=False, auth="required", bootstrap_admin_key=ADMIN_KEY)
    async with AsyncTrainingClient(f"127.0.0.1:{required.port}", api_key=made.key) as c:
        with pytest.raises(Exception, match="authentication was off") as err:
            await c.list_jobs()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with AsyncTrainingClient(f"127.0.0.1:{required.port}", api_key=ADMIN_KEY) as admin:
        fresh = await admin.create_key("initech")
        assert not fresh.admin and not next(k for k in await admin.list_keys("initech") if k.key_id == fresh.key_id).local


async def test_failed_key_lookups_are_rate_limited_per_client(start_app, caplog):
    app = await start_app(
        dispatch=False, auth="required", bootstrap_admin_key=ADMIN_KEY, auth_failed_lookups_burst=3, auth_failed_lookups_per_minute=1
    )
    target = f"127.0.0.1:{app.port}"
    async with AsyncTrainingClient(target, api_key=ADMIN_KEY) as admin:
        await admin.list_jobs()  # a known key, looked up (and cached) before the guessing
        codes = []
        for i in range(5):
            async with AsyncTrainingClient(target, api_key=f"aihub_guess_{i}_" + "x" * 30) as guess:
                try:
                    await guess.list_jobs()
                except Exception as exc:  # noqa: BLE001 - the status is what is checked
                    codes.append((exc.code, getattr(exc, "reason", "")))
        assert codes[:3] == [(grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated")] * 3
        assert codes[3:] == [(grpc.StatusCode.RESOURCE_EXHAUSTED, "RateLimited")] * 2, codes
        await admin.list_jobs()  # the known key still works
    assert any("failed API key lookups from 127.0.0.1" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_open_streams_are_capped_per_tenant_and_per_key(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame, "hooli")
    app = await start_app(dispatch=False, auth="required", bootstrap_admin_key=ADMIN_KEY)  # the job stays PENDING: streams stay open
    target = f"127.0.0.1:{app.port}"
    async with AsyncTrainingClient(target, api_key=ADMIN_KEY) as admin:
        await admin.update_quota("hooli", max_open_streams=2)  # each key: 1
        key1, key2, key3 = [(await admin.create_key("hooli")).key for _ in range(3)]
    async with AsyncTrainingClient(target, api_key=key1) as c:
        job = await c.create_job("", "forecast", tiny_config())
    channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.TrainingServiceStub(channel)
    held: list = []

    async def open_watch(key: str) -> grpc.StatusCode | None:
        call = stub.WatchTrainingJob(pb.WatchTrainingJobRequest(job_id=job.job_id), metadata=(("authorization", f"Bearer {key}"),))
        try:
            await asyncio.wait_for(call.read(), 10)  # the first state: the stream is open
        except grpc.aio.AioRpcError as exc:
            return exc
        held.append(call)
        return None

    try:
        assert await open_watch(key1) is None
        refused = await open_watch(key1)  # the key's own cap (half the tenant's)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams_per_key" in refused.details()
        assert await open_watch(key2) is None
        refused = await open_watch(key3)  # the tenant's cap
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_open_streams" in refused.details()
        logs = stub.StreamTrainingJobLogs(
            pb.StreamTrainingJobLogsRequest(job_id=job.job_id), metadata=(("authorization", f"Bearer {key3}"),)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:  # logs count as streams too
            await asyncio.wait_for(logs.read(), 10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        held.pop().cancel()  # a place frees when a stream closes
        await asyncio.sleep(0.5)
        assert await open_watch(key3) is None
    finally:
        for call in held:
            call.cancel()
        with contextlib.suppress(Exception):
            await channel.close()
