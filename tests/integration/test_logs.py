"""Structured logs through the real stack: with AIHUB_LOG_FORMAT=json the server's lines
about a job and its Ray task's lines are JSON objects carrying job_id, tenant_id, attempt
and (in the task) step."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest

from client import AsyncTrainingClient, pb
from server import observability
from tests.conftest import load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _task_lines(job_id: str) -> list[dict]:
    """The JSON lines about ``job_id`` in the Ray workers' log files of this session."""
    import ray

    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())
    found = []
    for path in logs_dir.glob("worker-*.err"):
        text = path.read_text(errors="replace")
        if job_id in text:
            found += [line for line in _json_lines(text) if line.get("job_id") == job_id]
    return found


async def test_server_and_task_lines_are_json_with_job_fields(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    server_log = logging.getLogger("server")
    buf = io.StringIO()
    observability.configure("json", "INFO", loggers=("server",), stream=buf)
    try:
        app = await start_app(log_format="json")
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
            job = await client.create_job("acme-corp", "forecast", tiny_config())
            done = await asyncio.wait_for(client.wait(job.job_id), 60)
            for _ in range(50):  # the dispatcher logs the outcome when the Ray task has returned
                if "attempt 1: COMPLETED" in buf.getvalue():
                    break
                await asyncio.sleep(0.1)
    finally:
        for handler in [h for h in server_log.handlers if (h.get_name() or "").startswith("aihub-")]:
            server_log.removeHandler(handler)
        server_log.propagate = True
        server_log.setLevel(logging.NOTSET)
    assert done.status == pb.COMPLETED
    mine = [line for line in _json_lines(buf.getvalue()) if line.get("job_id") == job.job_id]
    ended = [line for line in mine if line["message"] == "attempt 1: COMPLETED"]
    assert ended and ended[0]["tenant_id"] == "acme-corp" and ended[0]["attempt"] == 1, mine
    assert ended[0]["logger"] == "server.execution.dispatcher"

    # The Ray task wrote its lines (its steps, the job's own log lines) the same way.
    for _ in range(50):
        task = _task_lines(job.job_id)
        if any(line.get("step") == "registration" for line in task):
            break
        await asyncio.sleep(0.1)
    steps = {line.get("step") for line in task}
    assert {"data_loading", "preprocessing", "training", "evaluation", "registration"} <= steps, task
    assert all(line["tenant_id"] == "acme-corp" and line["attempt"] == 1 for line in task)
    assert any(line["message"].startswith("registration: model version 1") for line in task)
