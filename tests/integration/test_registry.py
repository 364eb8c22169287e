"""The model registry through the real stack: list, get, evaluate on another window, delete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

import pytest

from client import ConfigValidationError, DataLoadError, NotFoundError, pb
from client.errors import InvalidStateError
from tests.conftest import QUICK_START_CONFIG

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRAIN = {
    **QUICK_START_CONFIG,
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-09-30T23:00:00",
    "hyperparameters": {"n_estimators": 50},
}


async def test_registry_lists_gets_evaluates_and_deletes(client):
    jobs = [await client.create_job("acme-corp", "forecast", TRAIN) for _ in range(2)]
    done = [await asyncio.wait_for(client.wait(j.job_id), 120) for j in jobs]
    assert all(j.status == pb.COMPLETED for j in done)
    versions = await client.list_models("acme-corp")
    assert [v.version for v in versions] == [2, 1]
    v1 = versions[1]
    first = next(j for j in done if j.model_version == 1)  # the two jobs may run at once
    assert v1.job_id == first.job_id and v1.algorithm == "lgbm" and v1.target == "load"
    assert list(v1.features) == QUICK_START_CONFIG["features"] and len(v1.config_hash) == 64
    assert v1.config_hash == versions[0].config_hash  # same config, same lineage hash
    assert v1.metrics["mae"] == first.metrics["mae"]
    assert sum(v1.feature_importance.values()) == pytest.approx(1.0)
    assert v1.training_start.ToDatetime().year == 2024
    assert await client.list_models("someone-else") == []
    got = await client.get_model(v1.model_id, tenant_id="acme-corp")
    assert got == v1
    with pytest.raises(NotFoundError):
        await client.get_model(v1.model_id, tenant_id="someone-else")

    # "Validate before deployment": score version 1 on the next quarter.
    result = await client.evaluate_model(v1.model_id, "2024-10-01T00:00:00", "2024-12-31T23:00:00")
    m = result.metrics
    assert result.version == 1 and m["evaluation_rows"] == 92 * 24
    assert 0 < m["mae"] <= m["rmse"] and m["r2_score"] > 0.8 and m["skill"] > 0
    with pytest.raises(DataLoadError):
        await client.evaluate_model(v1.model_id, "1990-01-01T00:00:00", "1990-02-01T00:00:00")
    with pytest.raises(ConfigValidationError) as err:
        await client.evaluate_model(v1.model_id, "soon", "2024-12-31T23:00:00")
    assert err.value.violations[0][0] == "evaluation_start"

    deleted = await client.delete_model(v1.model_id)
    assert deleted.deleted_at.seconds > 0
    assert not Path(urlparse(v1.artifact_uri).path).exists()
    assert [v.version for v in await client.list_models("acme-corp")] == [2]
    assert [v.version for v in await client.list_models("acme-corp", include_deleted=True)] == [2, 1]
    with pytest.raises(InvalidStateError):
        await client.evaluate_model(v1.model_id, "2024-10-01T00:00:00", "2024-12-31T23:00:00")
