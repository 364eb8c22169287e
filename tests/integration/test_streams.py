"""Logs and watch streams: backlog, live delivery, resume with after_sequence."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from datetime import UTC

import pytest

from client import pb
from tests.conftest import slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")
STEPS = ["data_loading", "preprocessing", "training", "evaluation", "registration"]


async def test_logs_backlog_of_a_finished_job(client):
    job = await client.create_job("acme-corp", "forecast", tiny_config())
    await asyncio.wait_for(client.wait(job.job_id), 60)
    entries = [e async for e in client.stream_logs(job.job_id)]  # follow, but the job is final: ends
    assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
    assert [s for s in dict.fromkeys(e.step for e in entries) if s] == STEPS
    assert entries[0].message.startswith("job queued") and entries[-1].message.startswith("job completed")
    assert all(e.level == pb.INFO and e.attempt == 1 for e in entries)
    times = [e.time.ToDatetime() for e in entries]
    assert times == sorted(times)


async def test_resume_after_sequence_gets_exactly_the_missed_lines(client):
    job = await client.create_job("acme-corp", "forecast", tiny_config())
    await asyncio.wait_for(client.wait(job.job_id), 60)
    everything = [e async for e in client.stream_logs(job.job_id, follow=False)]
    rest = [e async for e in client.stream_logs(job.job_id, after_sequence=5)]
    assert rest == everything[5:]
    assert [e async for e in client.stream_logs(job.job_id, after_sequence=everything[-1].sequence)] == []


async def test_live_logs_arrive_while_the_job_runs(client):
    job = await client.create_job("acme-corp", "forecast", slow_config())
    arrivals = []
    start = time.monotonic()
    async with aclosing(client.stream_logs(job.job_id)) as stream:
        async for entry in stream:
            arrivals.append((time.monotonic() - start, entry))
            if entry.step == "training" and "training:" in entry.message:
                break  # the run is in its long training step now
    status = (await client.get_job(job.job_id)).status
    assert status == pb.RUNNING  # lines came before the job ended
    # Reconnect after the last line seen: the stream goes on from there, live.
    last = arrivals[-1][1].sequence
    await client.cancel_job(job.job_id)
    after = [e async for e in client.stream_logs(job.job_id, after_sequence=last)]
    assert after and after[0].sequence == last + 1 and after[-1].message == "job cancelled"


async def test_live_log_latency_is_low(client, app):
    """A line written by the worker reaches a following client quickly (NOTIFY, not polling)."""
    job = await client.create_job("acme-corp", "forecast", slow_config())
    gaps = []
    async with aclosing(client.stream_logs(job.job_id)) as stream:
        async for entry in stream:
            gaps.append(time.time() - entry.time.ToDatetime(tzinfo=UTC).timestamp())
            if entry.step == "training":
                break
    await client.cancel_job(job.job_id)
    live = gaps[2:]  # the first lines may be backlog
    assert live and max(live) < 0.5, gaps


async def test_watch_sends_snapshots_until_final(client):
    job = await client.create_job("acme-corp", "forecast", tiny_config(hyperparameters={"n_estimators": 300, "num_leaves": 15}))
    snaps = [j async for j in client.watch_job(job.job_id)]
    assert snaps[0].status in (pb.PENDING, pb.RUNNING)
    assert snaps[-1].status == pb.COMPLETED and snaps[-1].progress == 100 and snaps[-1].metrics["mae"] > 0
    progress = [s.progress for s in snaps]
    assert progress == sorted(progress)
    steps = [s for s in dict.fromkeys(s.current_step for s in snaps) if s]
    assert steps[0] == "data_loading" and steps[-1] == "registration"
    assert len(snaps) >= 5
    # Watching a final job answers once and ends.
    again = [j async for j in client.watch_job(job.job_id)]
    assert len(again) == 1 and again[0].status == pb.COMPLETED
