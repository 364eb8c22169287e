"""A distributed request that can never fit the cluster is refused at Create and Validate
with ResourceError (RESOURCE_EXHAUSTED), before anything is queued; the test Ray has 2 CPUs.
Distributed training itself: tests/integration/test_distributed.py."""

from __future__ import annotations

import pytest

from client import ConfigValidationError, ResourceError
from tests.conftest import tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOO_BIG = {"num_workers": 512, "cpus_per_worker": 2, "memory_per_worker": "4GB"}


async def test_an_impossible_request_is_a_resource_error_at_create_and_validate(client):
    config = tiny_config(distributed=True, ray_config=TOO_BIG)
    with pytest.raises(ResourceError) as created:
        await client.create_job("acme-corp", "forecast", config)
    assert created.value.reason == "ResourceError"
    assert created.value.details["requested_workers"] == "512" and created.value.details["available_workers"] == "1"
    assert created.value.details["resource"] == "CPU" and "Insufficient resources" in str(created.value)
    with pytest.raises(ResourceError):
        await client.validate_config(config)
    assert (await client.list_jobs("acme-corp")).jobs == []  # nothing was queued
    # One worker bigger than the machine: refused too, however few workers.
    with pytest.raises(ResourceError, match="bigger than any node"):
        await client.validate_config(tiny_config(distributed=True, ray_config={"num_workers": 1, "cpus_per_worker": 64}))


async def test_a_request_that_fits_is_judged_on_its_config(client):
    bad = tiny_config(distributed=True, ray_config={"num_workers": 2, "memory_per_worker": "1 gigabyte"})
    result = await client.validate_config(bad)
    assert not result.valid and [v.field for v in result.violations] == ["ray_config.memory_per_worker"]
    with pytest.raises(ConfigValidationError, match="isolation_forest trains on one node; distributed training applies to"):
        await client.create_job("acme-corp", "anomaly", tiny_config(model_type="anomaly", algorithm="isolation_forest", distributed=True))


async def test_the_cluster_registry_refreshes_itself(start_app):
    import asyncio

    from storage import clusters, db

    app = await start_app(cluster_refresh_seconds=0.3)

    async def heartbeat():
        async with db.transaction(app.engine) as conn:
            (cluster,) = await clusters.list_clusters(conn)
        return cluster

    first = await heartbeat()
    await asyncio.sleep(1.0)  # nobody lists the clusters meanwhile
    later = await heartbeat()
    assert first.status == "RUNNING" and first.num_workers == 1 and first.resources["CPU"] == 2.0
    assert later.updated_at > first.updated_at
