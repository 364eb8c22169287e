"""Ray for the benchmarks that need a cluster (bench.distributed, bench.scale): a local
two-node cluster of their own, started with ``ray start`` (stopped after), or, with
``running``, the Ray this process is already connected to (``python -m bench --smoke``'s
shared one; its owner stops it). Only inside the private network namespace
(server/isolation.py): Ray's nodes listen on every interface."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def two_nodes(cpus: int, *, running: bool) -> Iterator[str]:
    """Yields a line saying which Ray it is."""
    if running:
        import ray

        if not ray.is_initialized():
            raise SystemExit("--running-ray: this process is not connected to a Ray")
        yield f"the running Ray: {ray.cluster_resources().get('CPU', 0):g} CPUs"
        return
    from server.execution.local_cluster import LocalCluster, NodeSpec

    nodes = [NodeSpec(cpus, {"node_1": 1}), NodeSpec(cpus, {"node_2": 1})]
    cluster = LocalCluster(Path(f"/tmp/aihub-bench-{os.getpid()}"), nodes)  # noqa: S108 - short: Ray's socket paths are limited
    cluster.start()  # sets RAY_AUTH_MODE=token, which Ray reads when it is imported
    import ray

    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield f"cluster: 2 nodes x {cpus} CPU{'s' if cpus > 1 else ''} (logical; {os.cpu_count()} cores in all)"
    finally:
        ray.shutdown()
        cluster.stop()
