"""The stack heals itself, started as `make run` starts it (`python -m server`, its embedded
PostgreSQL and its local Ray, Envoy for REST): a raylet killed with -9 is noticed (a WARNING
names it), a new local Ray starts, and the job that was running goes back to the queue as
its next attempt (not one of its retries) and completes; a postmaster killed with -9 is
started again, and meanwhile REST /health answers 503 with the guide's body, so a probe can
act. The times it took are printed (the faults page quotes them)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from client import TrainingClient, pb
from tests.conftest import QUICK_START_CONFIG, free_port, server_process, tiny_config, until


def _stack_env(data_dir: Path, grpc_port: int, **settings: str) -> dict[str, str]:
    """The environment of a whole stack started as `make run` starts it (its own embedded
    PostgreSQL and local Ray of 2 CPUs), with ``settings`` added."""
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(data_dir),
        "AIHUB_GRPC_PORT": str(grpc_port),
        "AIHUB_METRICS_PORT": "0",
        "AIHUB_AUTH": "off",
        "AIHUB_LOCAL_RAY_CPUS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return {**env, **settings}


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
def test_a_killed_job_worker_raylet_and_postmaster_come_back_by_themselves(tmp_path: Path):
    grpc_port, http_port = free_port(), free_port()
    env = _stack_env(
        tmp_path / "data",
        grpc_port,
        AIHUB_HTTP_PORT=str(http_port),
        AIHUB_RAY_RECONNECT_SECONDS="1",
        AIHUB_CLUSTER_REFRESH_SECONDS="1",
    )
    rest = f"http://127.0.0.1:{http_port}"
    server_log = tmp_path / "server.log"
    medium = {**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 3000, "learning_rate": 0.01, "num_leaves": 63}}
    with server_process(tmp_path, env, timeout=180) as proc, TrainingClient(f"127.0.0.1:{grpc_port}") as c:
        server = psutil.Process(proc.pid)
        assert _health(rest)[0] == 200

        # --- a job's worker ---------------------------------------------------------------
        job = c.create_job("acme-corp", "forecast", medium)
        until(lambda: c.get_job(job.job_id).status == pb.RUNNING, 60)
        time.sleep(1)
        _descendant(server, "ray::aihub-training-job").send_signal(signal.SIGKILL)
        died = time.monotonic()
        until(lambda: (j := c.get_job(job.job_id)).attempt >= 2 and j.status == pb.RUNNING, 60)
        worker_again = time.monotonic() - died
        done = c.wait(job.job_id)
        assert done.status == pb.COMPLETED and done.attempt == 2, done.error
        lines = [line.message for line in c.stream_logs(job.job_id)]
        assert any("Ray worker process died" in m and "(not one of its retries)" in m for m in lines), lines
        assert not any(m.startswith(("job failed", "automatic retry")) for m in lines), lines

        # --- the raylet -----------------------------------------------------------------------
        job = c.create_job("acme-corp", "forecast", medium)
        until(lambda: c.get_job(job.job_id).status == pb.RUNNING, 60)
        raylet = _descendant(server, "raylet")
        raylet.send_signal(signal.SIGKILL)
        died = time.monotonic()
        until(lambda: "the local Ray node's raylet" in server_log.read_text(), 15)
        noticed = time.monotonic() - died
        again = until(lambda: (j := c.get_job(job.job_id)).attempt >= 2 and j.status == pb.RUNNING and j, 90)
        running_again = time.monotonic() - died
        assert again.attempt == 2
        done = c.wait(job.job_id)
        assert done.status == pb.COMPLETED, done.error
        lines = [line.message for line in c.stream_logs(job.job_id)]
        assert any("lost with the Ray cluster; queued again as attempt 2" in m for m in lines), lines
        assert not any(m.startswith(("job failed", "automatic retry")) for m in lines), lines  # its retries untouched
        assert _descendant(server, "raylet").pid != raylet.pid  # a new local Ray
        assert until(lambda: c.health().ray.status == "ok", 30)

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

        until(back, 60, step=0.05)
        recovered = time.monotonic() - died
        assert refused["status"] == "degraded" and refused["database"]["status"] == "unavailable", refused
        assert set(refused) >= {"status", "database", "ray", "queue"}  # the /health body, not an error body
        assert "died (postmaster pid" in server_log.read_text()
        after = c.create_job("acme-corp", "forecast", tiny_config())
        assert c.wait(after.job_id).status == pb.COMPLETED
        assert proc.poll() is None  # the same server throughout
    print(
        f"\njob worker kill: RUNNING again after {worker_again:.1f} s; raylet kill: WARNING after {noticed:.1f} s, "
        f"the job RUNNING again after {running_again:.1f} s; "
        f"postmaster kill: /health 200 again after {recovered:.1f} s (503 meanwhile)"
    )


MOUNT_TMPFS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
# A mount namespace of its own (root has the right; another user makes a user namespace
# first, mapped to itself), its mounts private, then a small tmpfs over the artifact root.
if libc.unshare(0x00020000 if uid == 0 else 0x10000000 | 0x00020000):
    raise SystemExit(f"unshare: {os.strerror(ctypes.get_errno())}")
if uid != 0:
    maps = (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"), ("/proc/self/gid_map", f"{gid} {gid} 1"))
    for path, text in maps:
        with open(path, "w") as f:
            f.write(text)
if libc.mount(None, b"/", None, 16384 | 262144, None):  # MS_REC | MS_PRIVATE: nothing leaks out
    raise SystemExit(f"mount --make-rprivate: {os.strerror(ctypes.get_errno())}")
if libc.mount(b"none", sys.argv[1].encode(), b"tmpfs", 0, b"size=" + sys.argv[2].encode()):
    raise SystemExit(f"mount: {os.strerror(ctypes.get_errno())}")
os.execvp(sys.argv[3], sys.argv[3:])
"""


@pytest.mark.timeout(240)
def test_a_full_disk_and_a_memory_kill_fail_with_their_own_reason_not_retried(tmp_path: Path):
    """A full artifact disk (a 32 KiB tmpfs, mounted in a namespace of the server's own) is
    ResourceExhausted; a worker killed by Ray's memory monitor (its threshold set so low
    that it kills every task) is OutOfMemory; neither is retried, each says the remedy."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (tmp_path / "mount_tmpfs.py").write_text(MOUNT_TMPFS)
    cases = [
        ("disk", {"AIHUB_ARTIFACT_ROOT": str(artifacts)}, "ResourceExhausted", "free space"),
        ("memory", {"RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "50"}, "OutOfMemory", "memory_per_worker"),
    ]
    for name, extra, reason, remedy in cases:
        run = tmp_path / name
        run.mkdir()
        grpc_port = free_port()
        env = _stack_env(run / "data", grpc_port, AIHUB_REST="false", **extra)
        wrapper = [sys.executable, str(tmp_path / "mount_tmpfs.py"), str(artifacts), "32k"] if name == "disk" else []
        with server_process(run, env, timeout=180, wrapper=wrapper), TrainingClient(f"127.0.0.1:{grpc_port}") as c:
            job = c.create_job("acme-corp", "forecast", QUICK_START_CONFIG)
            done = c.wait(job.job_id)
            assert done.status == pb.FAILED, name
            assert done.error.reason == reason and remedy in done.error.message, (name, done.error)
            assert len(done.error.message) < 600, done.error.message
            assert not done.HasField("next_retry_at"), name  # not retried unchanged
            time.sleep(2)
            assert c.get_job(job.job_id).attempt == 1, name
