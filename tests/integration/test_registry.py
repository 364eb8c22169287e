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

    # Its validation-window predictions were kept with it: the metrics follow from them.
    whole = await client.get_predictions(first.job_id, page_size=50_000)
    assert whole.model_id == v1.model_id and whole.model_version == 1 and whole.model_type == pb.FORECAST
    assert whole.total_points == whole.validation_rows == len(whole.points) == first.metrics["validation_rows"]
    assert whole.baseline in ("24h", "168h") and not whole.next_page_token and not whole.downsampled
    stamps = [p.timestamp.ToDatetime() for p in whole.points]
    assert stamps == sorted(stamps) and stamps[-1].isoformat() == "2024-09-30T23:00:00"
    mae = sum(abs(p.predicted - p.actual) for p in whole.points) / len(whole.points)
    assert mae == pytest.approx(first.metrics["mae"], rel=1e-9)
    base = sum(abs(p.baseline - p.actual) for p in whole.points) / len(whole.points)
    assert base == pytest.approx(first.metrics["baseline_mae"], rel=1e-9)
    paged, token, tokens = [], "", []
    while True:
        page = await client.get_predictions(first.job_id, page_size=1000, page_token=token)
        paged += page.points
        token = page.next_page_token
        tokens.append(token)
        if not token:
            break
    assert paged == list(whole.points)
    assert not any(t.isdigit() for t in tokens)  # opaque, as a listing's tokens are (AIP-158): no bare offset
    thin = await client.get_predictions(first.job_id, max_points=200)
    assert thin.downsampled and 100 <= len(thin.points) <= 200 and thin.total_points == whole.total_points
    peak = max(whole.points, key=lambda p: p.actual)
    assert peak in thin.points  # thinning keeps the peaks
    listing = await client.list_jobs(tenant_id="acme-corp", page_size=1)
    for bad in ("x", "1000", listing.next_page_token):  # nor a bare offset, nor a listing's token
        with pytest.raises(ConfigValidationError) as err:
            await client.get_predictions(first.job_id, page_token=bad)
        assert err.value.violations[0][0] == "page_token", bad
    with pytest.raises(ConfigValidationError):
        await client.get_predictions(first.job_id, max_points=-1)

    deleted = await client.delete_model(v1.model_id)
    assert deleted.deleted_at.seconds > 0
    assert not Path(urlparse(v1.artifact_uri).path).exists()
    assert [v.version for v in await client.list_models("acme-corp")] == [2]
    assert [v.version for v in await client.list_models("acme-corp", include_deleted=True)] == [2, 1]
    with pytest.raises(InvalidStateError):
        await client.evaluate_model(v1.model_id, "2024-10-01T00:00:00", "2024-12-31T23:00:00")
    with pytest.raises(InvalidStateError, match="went with its artifact"):
        await client.get_predictions(first.job_id)


async def test_predictions_of_an_unfinished_job_are_refused(client):
    job = await client.create_job("acme-corp", "forecast", {**TRAIN, "feature_table": "no_such_table"})
    with pytest.raises(InvalidStateError, match="COMPLETED"):
        await client.get_predictions(job.job_id)
    with pytest.raises(NotFoundError):
        await client.get_predictions("00000000-0000-0000-0000-000000000000")
    await asyncio.wait_for(client.wait(job.job_id), 120)
