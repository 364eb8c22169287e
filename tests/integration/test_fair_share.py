"""A slot kept for a waiting tenant (AIHUB_RESERVED_SLOTS): with tenant A's long jobs running,
A may not take the last free slot, so tenant B's quick job starts at once instead of waiting
for one of A's to end. B's latency is printed beside what it is alone."""

from __future__ import annotations

import asyncio
import time

from client import AsyncTrainingClient, pb
from tests.conftest import load_demo, slow_config, tiny_config

A, B = "acme-corp", "initech"


async def _latency(client: AsyncTrainingClient) -> tuple[float, pb.TrainingJob]:
    began = time.monotonic()
    job = await client.create_job(B, "forecast", tiny_config())
    done = await asyncio.wait_for(client.wait(job.job_id), 120)
    assert done.status == pb.COMPLETED, done.error
    return time.monotonic() - began, done


async def test_a_reserved_slot_lets_another_tenants_job_start_while_one_tenants_long_jobs_run(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    await load_demo(database_url, demo_frame, tenant=B)
    app = await start_app(reserved_slots=1, poll_interval_seconds=0.5)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        alone, _ = await _latency(client)
        first, second = [await client.create_job(A, "forecast", slow_config()) for _ in range(2)]
        for _ in range(200):
            if (await client.get_job(first.job_id)).status == pb.RUNNING:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # dispatch passes go by: A's second job is not given the last slot
        waiting = await client.get_job(second.job_id)
        assert waiting.status == pb.PENDING
        lines = [line.message async for line in client.stream_logs(second.job_id, follow=False)]
        assert any("kept for tenants running no job (AIHUB_RESERVED_SLOTS)" in m for m in lines), lines
        beside, b_job = await _latency(client)  # B's job takes the kept slot while A's first job runs
        a_job = await client.get_job(first.job_id)
        # B's job started while A's first still ran (not once one of A's ended).
        assert a_job.status == pb.RUNNING, a_job
        assert (await client.get_job(second.job_id)).status == pb.PENDING
        for job in (first, second):
            await client.cancel_job(job.job_id)
    print(f"\ntenant B's quick job, create -> COMPLETED: alone {alone:.2f} s, beside tenant A's long jobs {beside:.2f} s")
    assert beside < alone + 15  # not A's long job's length: it started at once


async def test_without_a_reserve_one_tenants_long_jobs_take_every_slot(start_app, database_url, demo_frame):
    """The fault the reserve cures: with AIHUB_RESERVED_SLOTS=0, A's two long jobs hold both slots."""
    await load_demo(database_url, demo_frame)
    app = await start_app(reserved_slots=0, poll_interval_seconds=0.5)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        jobs = [await client.create_job(A, "forecast", slow_config()) for _ in range(2)]
        for _ in range(200):
            states = [(await client.get_job(job.job_id)).status for job in jobs]
            if states == [pb.RUNNING, pb.RUNNING]:
                break
            await asyncio.sleep(0.1)
        for job in jobs:
            await client.cancel_job(job.job_id)
    assert states == [pb.RUNNING, pb.RUNNING]
