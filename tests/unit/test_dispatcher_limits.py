"""The dispatcher's stall warning: a running job whose progress has not moved for
stall_warning_seconds is warned about once per stall (the heartbeat reports where each job
stands)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from server.execution.dispatcher import Dispatcher, Limits, RunningJob
from server.execution.payloads import TaskSettings


def test_a_stalled_job_is_warned_once_per_stall(monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr("server.execution.dispatcher.time.monotonic", lambda: clock[0])
    d = Dispatcher(None, None, server_id="s", task_settings=TaskSettings("", ""), limits=Limits(stall_warning_seconds=60))  # type: ignore[arg-type]
    job = uuid.uuid4()
    loop = asyncio.new_event_loop()
    d.jobs[job] = RunningJob(loop.create_future(), attempt=2, holds={})  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    assert d._stalled({job: (40, "training")}) == []
    clock[0] += 59
    assert d._stalled({job: (40, "training")}) == []
    clock[0] += 2
    ((job_id, attempt, message),) = d._stalled({job: (40, "training")})
    assert (job_id, attempt) == (job, 2) and "no progress for 61 s" in message and "training" in message
    clock[0] += 100
    assert d._stalled({job: (40, "training")}) == []  # once per stall
    assert d._stalled({job: (55, "training")}) == []  # it moved: a new stall starts counting
    clock[0] += 61
    assert len(d._stalled({job: (55, "training")})) == 1
    assert sum("no progress" in r.getMessage() for r in caplog.records) == 2
    loop.close()


@pytest.mark.parametrize("limit", [None, 5])
def test_the_time_limit_is_the_jobs_or_the_servers_default(limit):
    from tests.conftest import tiny_config
    from trainers.spec import TrainingSpec

    spec = TrainingSpec.from_dict({**tiny_config(), "model_type": "forecast", **({"max_runtime_seconds": limit} if limit else {})})
    assert spec.max_runtime_seconds == limit
    assert ("max_runtime_seconds" in spec.to_dict()) == (limit is not None)
    d = Dispatcher(None, None, server_id="s", task_settings=TaskSettings("", ""), limits=Limits(default_runtime_seconds=321))  # type: ignore[arg-type]
    assert d.time_limit(spec) == (limit if limit is not None else 321)
