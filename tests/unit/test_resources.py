"""What a distributed config asks of the cluster (ray_config read strictly), and whether it
can ever fit a given cluster: ResourceError naming the short resource, or nothing."""

from __future__ import annotations

import pytest

from server.execution.clusters import shortage
from storage.records import RayCluster, WorkerNode
from tests.conftest import tiny_config
from trainers.spec import WorkerRequest, parse_memory, validate, worker_request

GIB = 1024**3


def cluster(*nodes: dict[str, float], dead: dict[str, float] | None = None) -> RayCluster:
    workers = [WorkerNode(f"n{i}", "127.0.0.1", "ALIVE", r) for i, r in enumerate(nodes)]
    if dead:
        workers.append(WorkerNode("gone", "127.0.0.1", "DEAD", dead))
    return RayCluster("c", "local", "RUNNING", len(nodes), {}, {}, tuple(workers))


@pytest.mark.parametrize(("text", "size"), [("4GB", 4 * GIB), ("512MB", 512 * 1024**2), ("1.5GiB", int(1.5 * GIB)), ("64 KB", 64 * 1024)])
def test_memory_sizes_are_read_strictly(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["4", "4gb", "4 GBs", "-1GB", "0GB", "GB", 4, None, "4PB"])
def test_anything_else_is_not_a_memory_size(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_a_distributed_config_is_a_worker_request():
    gpu = {"num_workers": 4, "cpus_per_worker": 2, "memory_per_worker": "4GB", "use_gpu": True}
    config = tiny_config(algorithm="mlp", hyperparameters={}, distributed=True, ray_config=gpu)
    assert worker_request(config) == WorkerRequest(workers=4, cpus=2.0, memory=4 * GIB, gpus=1.0)
    # lgbm trains on the CPU whatever use_gpu says (its log says so): no GPU is held for it.
    assert worker_request(tiny_config(distributed=True, ray_config=gpu)) == WorkerRequest(workers=4, cpus=2.0, memory=4 * GIB, gpus=0.0)
    assert worker_request(tiny_config(distributed=True)) == WorkerRequest(workers=2, cpus=1.0, memory=0, gpus=0.0)
    assert worker_request(tiny_config()) is None
    bad = tiny_config(distributed=True, ray_config={"num_workers": 0, "memory_per_worker": "lots"})
    assert worker_request(bad) is None
    fields = {v.field for v in validate(bad, model_type="forecast")}
    assert {"ray_config.num_workers", "ray_config.memory_per_worker"} <= fields


def test_a_request_the_cluster_holds_fits():
    two_nodes = cluster({"CPU": 2, "memory": 8 * GIB}, {"CPU": 2, "memory": 8 * GIB})
    assert shortage(WorkerRequest(4, 1.0, 2 * GIB, 0), two_nodes) is None


def test_too_many_workers_are_short_of_cpus():
    error = shortage(WorkerRequest(512, 2.0, 4 * GIB, 0), cluster({"CPU": 2, "memory": 8 * GIB}, {"CPU": 2, "memory": 8 * GIB}))
    assert error is not None and error.reason == "ResourceError"
    assert error.details == {"requested_workers": "512", "available_workers": "2", "resource": "CPU", "requested": "1024", "available": "4"}


def test_memory_can_be_the_short_resource():
    error = shortage(WorkerRequest(2, 1.0, 6 * GIB, 0), cluster({"CPU": 8, "memory": 8 * GIB}, dead={"CPU": 8, "memory": 64 * GIB}))
    assert error is not None and error.details["resource"] == "memory" and error.details["available_workers"] == "1"


def test_a_worker_bigger_than_any_node_never_fits_even_when_the_total_would():
    error = shortage(WorkerRequest(1, 4.0, 0, 0), cluster({"CPU": 2}, {"CPU": 2}))
    assert error is not None and "bigger than any node" in error.message and error.details["available_workers"] == "0"


def test_gpus_are_counted_when_asked_for():
    error = shortage(WorkerRequest(1, 1.0, 0, 1.0), cluster({"CPU": 2}))
    assert error is not None and error.details["resource"] == "GPU"
    assert shortage(WorkerRequest(2, 1.0, 0, 1.0), cluster({"CPU": 2, "GPU": 1}, {"CPU": 2, "GPU": 1})) is None
