"""`python -m server` as `make run` starts it: killed with -9, nothing it started outlives it
(Envoy, the embedded PostgreSQL, the local Ray and its agents); a port in use is a clear
start-up error, not a second server listening beside the first."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import psutil
import pytest

from client import TrainingClient, pb
from server import isolation
from server.api.envoy import Envoy
from server.lifecycle import PortInUse
from tests.conftest import QUICK_START_CONFIG, ROOT, free_port, server_process


def _env(tmp_path, grpc_port: int, http_port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(tmp_path / "data"),
        "AIHUB_GRPC_PORT": str(grpc_port),
        "AIHUB_HTTP_PORT": str(http_port),
        "AIHUB_METRICS_PORT": str(free_port()),
        "AIHUB_AUTH": "off",
        "AIHUB_LOCAL_RAY_CPUS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


@pytest.mark.timeout(300)
def test_nothing_the_server_started_outlives_a_kill_9(tmp_path):
    grpc_port, http_port = free_port(), free_port()
    with server_process(tmp_path, _env(tmp_path, grpc_port, http_port)) as proc:
        postmaster = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])  # pg_ctl daemonises it
        started = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(postmaster)]
        names = {p.name() for p in started}
        assert "envoy" in names and "postgres" in names and "raylet" in names and "ray::DashboardAgent" in names, names
        # A second server on the same ports refuses to start, saying why.
        second = subprocess.run(
            [sys.executable, "-m", "server"],
            cwd=ROOT,
            env=_env(tmp_path / "second", grpc_port, free_port()),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode != 0 and "AIHUB_GRPC_PORT" in second.stderr and "already in use" in second.stderr, second.stderr[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(started, timeout=60)
        survivors = [f"{p.pid} {p.name()}" for p in alive]
        assert not survivors, f"outlived the server: {survivors}"
        with socket.socket() as s:  # the REST port is free again
            s.bind(("127.0.0.1", http_port))


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def test_envoy_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        envoy = Envoy(grpc_port=free_port(), http_port=port)
        with pytest.raises(PortInUse, match=f"AIHUB_HTTP_PORT .*127.0.0.1:{port} is already in use"):
            envoy.start()


@pytest.mark.timeout(400)
def test_a_terminals_ctrl_c_drains_the_running_job(tmp_path):
    """What a terminal sends on Ctrl-C: SIGINT to every process of `make run`'s group. The
    server drains (its running job finishes, attempt 1), it does not hand the job back.

    With authentication required and a bootstrap admin key: while the job trains, no process
    the server started (the backend, Envoy, PostgreSQL, Ray's raylet, GCS, agents and the job's
    worker) has the key (or the database URL) in its environment, and the files it leaves are
    private: the data folder, the artifacts and Ray's temp folder 0700, the model files 0600."""
    grpc_port, http_port = free_port(), free_port()
    env = _env(tmp_path, grpc_port, http_port)
    env.pop(isolation.MARKER, None)  # as `make run` starts it: the backend in a namespace of its own, behind the front
    env["AIHUB_DRAIN_SECONDS"] = "150"
    env["AIHUB_AUTH"] = "required"
    env["AIHUB_BOOTSTRAP_ADMIN_KEY"] = admin_key = "bootstrap-" + "s3cret" * 8
    config = {**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 1500, "learning_rate": 0.02, "num_leaves": 63}}
    with server_process(tmp_path, env, timeout=180, start_new_session=True) as proc:
        with TrainingClient(f"127.0.0.1:{grpc_port}", api_key=admin_key) as client:
            job = client.create_job("acme-corp", "forecast", config, priority="high")
            deadline = time.monotonic() + 120
            while (got := client.get_job(job.job_id)).status != pb.RUNNING or got.current_step != "training":
                assert got.status in (pb.PENDING, pb.RUNNING), got
                assert time.monotonic() < deadline, "the job did not start training"
                time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        postmaster = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
        seen, holding = set(), []
        for child in [*children, psutil.Process(postmaster), *psutil.Process(postmaster).children()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                raw = pathlib.Path(f"/proc/{child.pid}/environ").read_bytes()
                seen.add(child.name())
                if admin_key.encode() in raw or b"DATABASE_URL=" in raw:
                    holding.append(f"{child.pid} {child.name()}")
        assert {"envoy", "raylet", "gcs_server", "postgres"} <= seen and any(n.startswith("ray::") for n in seen), seen
        assert not holding, f"a secret is in the environment of: {holding}"
        temp_dirs = {m for c in children for m in re.findall(r"/tmp/aihub-ray-\d+", " ".join(_cmdline(c)))}
        assert temp_dirs and all(_mode(pathlib.Path(t)) == 0o700 for t in temp_dirs), temp_dirs
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(240) == 0
    data = tmp_path / "data"
    # As root, the embedded PostgreSQL runs as a system user of its own, and its wheel opens the
    # folders above its data to it (g+rx, o+rx); as any other user the data folder stays 0700.
    assert _mode(data) == (0o755 if os.getuid() == 0 else 0o700)
    assert all(_mode(data / d) == 0o700 for d in ("artifacts", "run", "mlruns"))
    models = [p for p in (data / "artifacts").rglob("*") if p.is_file()]
    assert models and all(_mode(p) == 0o600 for p in models), {str(p): oct(_mode(p)) for p in models}
    log = (tmp_path / "server.log").read_text()
    assert "draining: 1 running jobs" in log, log[-3000:]
    assert "attempt 1: COMPLETED" in log, log[-3000:]
    assert "handed back to the queue" not in log and "attempt 1: CANCELLED" not in log, log[-3000:]
