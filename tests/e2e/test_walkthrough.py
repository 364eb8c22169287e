"""The acceptance walkthrough (../shared/acceptance/guide_walkthrough.py: the guide's own REST
requests) against the stack started the way `make run` starts it: `python -m server
--seed-demo` with embedded PostgreSQL, a local Ray, the gRPC server and Envoy; the backend in
its private network namespace with Envoy in front (as from a shell outside one), here with a
local two-node Ray cluster (AIHUB_LOCAL_RAY_NODES=2), so the distributed check spreads its
workers over both nodes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, server_process

WALKTHROUGH = ROOT.parent / "shared" / "acceptance" / "guide_walkthrough.py"
NOT_YET: set[str] = set()


@pytest.fixture
def stack(tmp_path):
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(tmp_path),
        "AIHUB_GRPC_PORT": str(grpc_port),
        "AIHUB_HTTP_PORT": str(http_port),
        "AIHUB_METRICS_PORT": str(metrics_port),
        "AIHUB_AUTH": "off",  # as `make run` sets it
        "PYTHONUNBUFFERED": "1",
        "AIHUB_LOCAL_RAY_NODES": "2",
    }
    env.pop("DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    env.pop("AIHUB_ISOLATED", None)  # as a shell outside the suite's namespace: the server isolates its backend itself
    with server_process(tmp_path, env):
        started = (tmp_path / "server.log").read_text()
        assert "private network namespace" in started and "local Ray cluster of 2 nodes" in started, started[-3000:]
        yield f"http://127.0.0.1:{http_port}", metrics_port


@pytest.mark.timeout(900)
@pytest.mark.skipif(not WALKTHROUGH.exists(), reason=f"{WALKTHROUGH} is not here (it is in CI and sessions)")
def test_guide_walkthrough_passes(stack):
    from tests.acceptance_checks import check_names

    api_url, metrics_port = stack
    wanted = [name for name in check_names(WALKTHROUGH) if name not in NOT_YET]
    result = subprocess.run(
        [sys.executable, str(WALKTHROUGH), "--only", *wanted, "--timeout", "300"],
        env={**os.environ, "API_URL": api_url},
        capture_output=True,
        text=True,
        timeout=850,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(wanted)} passed, 0 failed" in result.stdout
    # Prometheus scrapes the backend (in its namespace) through Envoy on AIHUB_METRICS_PORT.
    from tests.integration.test_operations import scrape, value

    families = scrape(metrics_port)
    assert value(families, "aihub_jobs", status="COMPLETED") >= 1
    assert not [s for samples in families.values() for s in samples if "tenant" in s.labels]  # opt-in (issue 26)
    assert value(families, "aihub_rpc_requests_total", method="CreateTrainingJobHttp", code="OK") >= 1
    assert value(families, "aihub_ray_nodes") == 2
