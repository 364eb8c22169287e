"""A real two-node Ray cluster on this machine, started with ``ray start`` as an operator
would: a head node (2 CPUs, custom resource ``head_node``) and a second node (1 CPU,
``second_node``), so that a test can tell where a worker ran. The suite's server connects to
it with ``ray_address`` (RAY_ADDRESS). These tests run in their own pytest process (a Ray
driver joins one cluster per process): ``make test`` runs them after the rest, inside the
same private network namespace (server/isolation.py), where Ray may open its sockets.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from server import isolation
from server.execution.executor import RayExecutor
from server.execution.local_cluster import LocalCluster, NodeSpec

HEAD = NodeSpec(2, {"head_node": 1})
SECOND = NodeSpec(1, {"second_node": 1})


class TwoNodes(LocalCluster):
    def kill_second(self) -> None:
        self.kill_node("second_node")

    def start_second(self) -> None:
        self.start_node(SECOND)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    if not isolation.isolated():
        pytest.fail("the cluster tests start Ray nodes that listen on every interface: run them in server.isolation (make test)")
    # A short path: Ray's socket paths must stay under 108 characters.
    temp_dir = Path(f"/tmp/aihub-cluster-{os.getpid()}")
    c = TwoNodes(temp_dir, [HEAD, SECOND])
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_executor(cluster) -> RayExecutor:
    """The suite's executor, on the two-node cluster (as RAY_ADDRESS would)."""
    executor = RayExecutor(cluster.address, job_cpus=1)
    executor.start()
    deadline = time.monotonic() + 30
    while len([n for n in executor.cluster().nodes if n.status == "ALIVE"]) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the second node did not join")
        time.sleep(0.2)
    yield executor
    import ray

    ray.shutdown()
