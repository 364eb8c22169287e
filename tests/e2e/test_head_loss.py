"""The Ray head goes away and comes back, with the server started as in production
(`python -m server`, RAY_ADDRESS pointing at a cluster started with `ray start`): the
cluster reads DOWN and /health says so, the API keeps serving (reads, and a create that
waits PENDING), and when the head is back the job runs, without the server restarting.
The test process itself is not a Ray driver of that cluster."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from client import TrainingClient, pb
from server.execution.local_cluster import LocalCluster, NodeSpec
from tests.conftest import free_port, server_process, tiny_config, until


@pytest.mark.timeout(400)
def test_the_service_rides_out_the_loss_of_its_ray_head(tmp_path):
    head = LocalCluster(Path(f"/tmp/aihub-head-{os.getpid()}"), [NodeSpec(2)])
    head.start()
    grpc_port = free_port()
    env = {
        **os.environ,
        "RAY_ADDRESS": head.address,
        "AIHUB_DATA_DIR": str(tmp_path),
        "AIHUB_GRPC_PORT": str(grpc_port),
        "AIHUB_REST": "false",
        "AIHUB_METRICS_PORT": "0",
        "AIHUB_AUTH": "off",
        "AIHUB_RAY_RECONNECT_SECONDS": "1",
        "AIHUB_CLUSTER_REFRESH_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    back = None
    try:
        with server_process(tmp_path, env) as proc, TrainingClient(f"127.0.0.1:{grpc_port}") as c:
            first = c.create_job("acme-corp", "forecast", tiny_config())
            assert c.wait(first.job_id).status == pb.COMPLETED

            head.stop()  # the head, and with it the whole one-node cluster, is gone
            health = until(lambda: (h := c.health()).ray.status == "down" and h, 90)
            assert "DOWN" in health.ray.detail and health.status == "degraded"
            assert until(lambda: [cl for cl in c.list_clusters() if cl.status == "DOWN"], 30)
            waiting = c.create_job("acme-corp", "forecast", tiny_config())  # the API still takes work
            time.sleep(3)
            assert c.get_job(waiting.job_id).status == pb.PENDING
            assert c.get_job(first.job_id).status == pb.COMPLETED  # and reads

            back = LocalCluster(Path(f"/tmp/aihub-head2-{os.getpid()}"), [NodeSpec(2)], port=head.port)
            back.start()
            done = until(lambda: (j := c.get_job(waiting.job_id)).status in (pb.COMPLETED, pb.FAILED) and j, 180)
            assert done.status == pb.COMPLETED, done.error
            assert until(lambda: c.health().ray.status == "ok", 30)
            assert proc.poll() is None  # the same server throughout
        assert "Ray is back: dispatch resumes" in (tmp_path / "server.log").read_text()
    finally:
        head.stop()
        if back is not None:
            back.stop()
