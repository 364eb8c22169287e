"""A real two-node Ray cluster on this machine, started with ``ray start`` as an operator
would: a head node (2 CPUs, custom resource ``head_node``) and a second node (1 CPU,
``second_node``), so that a test can tell where a worker ran. The second node is as a
platform team's node would be: Ray and the libraries, not this project. It runs a Python
environment of its own (a venv that reads the libraries' site-packages, without our
package's editable install) in a mount namespace where the repository is an empty folder,
so its workers have our code only as the server ships it (server/execution/shipping.py). The suite's server connects to
it with ``ray_address`` (RAY_ADDRESS). These tests run in their own pytest process (a Ray
driver joins one cluster per process): ``make test`` runs them after the rest, inside the
same private network namespace (server/isolation.py), where Ray may open its sockets.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from server import isolation
from server.execution.executor import RayExecutor
from server.execution.local_cluster import LocalCluster, NodeSpec

HEAD = NodeSpec(2, {"head_node": 1})
SECOND = NodeSpec(1, {"second_node": 1})


ROOT = Path(__file__).resolve().parents[2]


def bare_environment(where: Path) -> list[str]:
    """A command prefix that runs what follows as on a node without this project: a venv
    (``where``/venv) whose one path file adds the libraries' site-packages (bind-mounted at
    ``where``/libs, since the repository that holds them is hidden), run in a mount
    namespace of its own where the repository is an empty tmpfs."""
    venv, libs = where / "venv", where / "libs"
    if not venv.exists():
        base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
        site = next(venv.glob("lib/python*/site-packages"))
        (site / "libraries.pth").write_text(f"{libs}\n")  # a plain path: the .pth files there are not read
    libs.mkdir(exist_ok=True)
    ours = sysconfig.get_paths()["purelib"]
    script = " && ".join(
        [
            f"mount --bind {shlex.quote(ours)} {shlex.quote(str(libs))}",
            f"mount -t tmpfs -o size=1m hidden {shlex.quote(str(ROOT))}",
            'cd / && exec "$@"',
        ]
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(venv / "bin" / "python")]


class TwoNodes(LocalCluster):
    def command(self, node: NodeSpec, *args: str) -> list[str]:
        if node is not SECOND:
            return super().command(node, *args)
        ray_start = super().command(node, *args)[1:]  # the same arguments, from the bare environment's Python
        return [*bare_environment(self.temp_dir / "bare"), "-c", "from ray.scripts.scripts import main; main()", *ray_start]

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
