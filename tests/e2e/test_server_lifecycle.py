"""`python -m server` as `make run` starts it: killed with -9, nothing it started outlives it
(Envoy, the embedded PostgreSQL, the local Ray and its agents); a port in use is a clear
start-up error, not a second server listening beside the first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from server.api.envoy import Envoy
from server.lifecycle import PortInUse
from tests.conftest import ROOT, free_port, server_process


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


def test_envoy_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        envoy = Envoy(grpc_port=free_port(), http_port=port)
        with pytest.raises(PortInUse, match=f"AIHUB_HTTP_PORT .*127.0.0.1:{port} is already in use"):
            envoy.start()
