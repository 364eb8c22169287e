"""The stack heals itself, started as `make run` starts it (`python -m server`, its embedded
PostgreSQL and its local Ray, Envoy for REST): a raylet killed with -9 is noticed (a WARNING
names it), a new local Ray starts, and the job that was running goes back to the queue as
its next attempt (not one of its retries) and completes; a postmaster killed with -9 is
started again, and meanwhile REST /health answers 503 with the guide's body, so a probe can
act. The times it took are printed (the faults page quotes them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from client import TrainingClient, pb
from tests.conftest import QUICK_START_CONFIG, free_port, server_process, tiny_config


def _until(what, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(step)
    return found


def _descendant(proc: psutil.Process, name: str) -> psutil.Process:
    (found,) = [p for p in proc.children(recursive=True) if p.name() == name]
    return found


def _health(rest: str) -> tuple[int, dict]:
    try:
        got = requests.get(f"{rest}/health", timeout=5)
    except requests.RequestException:
        return 0, {}
    return got.status_code, got.json()


@pytest.mark.timeout(400)
def test_a_killed_raylet_and_a_killed_postmaster_come_back_by_themselves(tmp_path: Path):
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(tmp_path / "data"),
        "AIHUB_GRPC_PORT": str(grpc_port),
        "AIHUB_HTTP_PORT": str(http_port),
        "AIHUB_METRICS_PORT": "0",
        "AIHUB_AUTH": "off",
        "AIHUB_RAY_RECONNECT_SECONDS": "1",
        "AIHUB_CLUSTER_REFRESH_SECONDS": "1",
        "AIHUB_LOCAL_RAY_CPUS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    rest = f"http://127.0.0.1:{http_port}"
    server_log = tmp_path / "server.log"
    medium = {**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 3000, "learning_rate": 0.01, "num_leaves": 63}}
    with server_process(tmp_path, env, timeout=180) as proc, TrainingClient(f"127.0.0.1:{grpc_port}") as c:
        server = psutil.Process(proc.pid)
        assert _health(rest)[0] == 200

        # --- the raylet -----------------------------------------------------------------------
        job = c.create_job("acme-corp", "forecast", medium)
        _until(lambda: c.get_job(job.job_id).status == pb.RUNNING, 60)
        raylet = _descendant(server, "raylet")
        raylet.send_signal(signal.SIGKILL)
        died = time.monotonic()
        _until(lambda: "the local Ray node's raylet" in server_log.read_text(), 15)
        noticed = time.monotonic() - died
        again = _until(lambda: (j := c.get_job(job.job_id)).attempt >= 2 and j.status == pb.RUNNING and j, 90)
        running_again = time.monotonic() - died
        assert again.attempt == 2
        done = c.wait(job.job_id)
        assert done.status == pb.COMPLETED, done.error
        lines = [line.message for line in c.stream_logs(job.job_id)]
        assert any("lost with the Ray cluster; queued again as attempt 2" in m for m in lines), lines
        assert not any(m.startswith(("job failed", "automatic retry")) for m in lines), lines  # its retries untouched
        assert _descendant(server, "raylet").pid != raylet.pid  # a new local Ray
        assert _until(lambda: c.health().ray.status == "ok", 30)

        # --- the postmaster ---------------------------------------------------------------
        pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        died = time.monotonic()
        seen: set[int] = set()
        refused: dict = {}

        def back() -> bool:
            status, body = _health(rest)
            seen.add(status)
            if status == 503:
                refused.update(body)
            return status == 200 and 503 in seen

        _until(back, 60, step=0.05)
        recovered = time.monotonic() - died
        assert refused["status"] == "degraded" and refused["database"]["status"] == "unavailable", refused
        assert set(refused) >= {"status", "database", "ray", "queue"}  # the /health body, not an error body
        assert "died (postmaster pid" in server_log.read_text()
        after = c.create_job("acme-corp", "forecast", tiny_config())
        assert c.wait(after.job_id).status == pb.COMPLETED
        assert proc.poll() is None  # the same server throughout
    print(
        f"\nraylet kill: WARNING after {noticed:.1f} s, the job RUNNING again after {running_again:.1f} s; "
        f"postmaster kill: /health 200 again after {recovered:.1f} s (503 meanwhile)"
    )
