"""Failures named for what ran out, on the stack as `make run` starts it (`python -m server`,
its embedded PostgreSQL and its local Ray): a full artifact disk and a memory kill. The
faults the stack heals by itself (a job's worker, the raylet and the postmaster killed with
-9; a slot kept for a waiting tenant) are the chaos suite's second stack
(tests/chaos/healing.py), whose short version runs in tests/e2e/test_chaos.py."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

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


def _raylets(server: psutil.Process, node: str) -> list[psutil.Process]:
    """The raylets of ``node`` in the local cluster of the server's driver child (its temp
    folder is named after the child's pid; the nodes run in sessions of their own)."""
    temp_dirs = [f"aihub-ray-{p.pid}" for p in server.children(recursive=True)]
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (
            proc.info["name"] == "raylet"
            and proc.info["status"] != psutil.STATUS_ZOMBIE
            and node in cmdline
            and any(t in cmdline for t in temp_dirs)
        ):
            found.append(proc)
    return found


@pytest.mark.timeout(300)
def test_a_dead_node_of_a_local_multi_node_cluster_is_started_again(tmp_path: Path):
    """AIHUB_LOCAL_RAY_NODES=2: node 2's raylet killed with -9 under a running job is
    started again in place; the job it ran is queued again (not retried) and completes."""
    grpc_port = free_port()
    env = _stack_env(tmp_path / "data", grpc_port, AIHUB_REST="false", AIHUB_LOCAL_RAY_NODES="2", AIHUB_CLUSTER_REFRESH_SECONDS="1")
    medium = {**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 3000, "learning_rate": 0.01, "num_leaves": 63}}
    with server_process(tmp_path, env, timeout=180) as proc, TrainingClient(f"127.0.0.1:{grpc_port}") as c:
        server = psutil.Process(proc.pid)
        jobs = [c.create_job("acme-corp", "forecast", medium) for _ in range(2)]
        working = lambda j: any("step preprocessing started" in line.message for line in c.stream_logs(j.job_id, follow=False))  # noqa: E731
        until(lambda: all(working(j) for j in jobs), 90)  # both at work: one on each node
        (raylet,) = _raylets(server, "node_2")
        raylet.send_signal(signal.SIGKILL)
        died = time.monotonic()
        log = tmp_path / "server.log"
        until(lambda: "node node_2 died" in log.read_text(), 15)
        until(lambda: "node node_2 is running again" in log.read_text(), 60)
        started_again = time.monotonic() - died
        (again,) = _raylets(server, "node_2")
        assert again.pid != raylet.pid
        done = [c.wait(j.job_id) for j in jobs]
        assert [d.status for d in done] == [pb.COMPLETED, pb.COMPLETED], [d.error for d in done]
        assert sorted(d.attempt for d in done) == [1, 2]  # the job on node 2 came back as its next attempt
        for d in done:
            lines = [line.message for line in c.stream_logs(d.job_id)]
            assert not any(m.startswith(("job failed", "automatic retry")) for m in lines), lines
        assert until(lambda: c.health().ray.status == "ok" and "2 node(s)" in c.health().ray.detail, 30)
        after = c.create_job("acme-corp", "forecast", tiny_config())
        assert c.wait(after.job_id).status == pb.COMPLETED
    print(f"\nnode 2's raylet killed: started again after {started_again:.1f} s")
