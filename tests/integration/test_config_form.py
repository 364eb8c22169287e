"""One form of a job's config, through the real stack: the spec is built once at Create,
stored in its canonical form with its hash, shown back in that form, and the model
version carries the same form and hash."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from client import ConfigValidationError, pb
from client._requests import config as config_message
from storage import db, jobs
from storage.tenancy import Scope
from tests.conftest import QUICK_START_CONFIG, tiny_config
from trainers import spec

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_stored_form_is_the_specs_canonical_form(client, app):
    submitted = tiny_config(training_start="2024-03-01T02:00:00+02:00", model_type=None)
    submitted.pop("validation_split")
    job = await client.create_job("acme-corp", "forecast", submitted)
    expected = spec.build(submitted, model_type="forecast")
    async with db.transaction(app.engine, Scope.ALL) as conn:
        stored = await jobs.get(conn, uuid.UUID(job.job_id))
    assert stored.config == expected.to_dict() and stored.config_hash == expected.config_hash
    # What the API shows is that form: defaults written in, times in UTC, the job's model type.
    assert job.config.training_start == "2024-03-01T00:00:00" and job.config.validation_split == 0.2
    assert job.config.model_type == pb.FORECAST and job.config.feature_table == "load_forecasting"

    done = await asyncio.wait_for(client.wait(job.job_id), 60)
    assert done.status == pb.COMPLETED, done.error
    (version,) = [v for v in await client.list_models("acme-corp") if v.job_id == job.job_id]
    assert version.config_hash == expected.config_hash  # hashed once, at Create
    assert version.config == done.config


async def test_the_same_model_written_two_ways_has_one_hash(client, app):
    a = await client.create_job("acme-corp", "forecast", QUICK_START_CONFIG, priority="low")
    b = await client.create_job(
        "acme-corp",
        "forecast",
        {**dict(reversed(list(QUICK_START_CONFIG.items()))), "training_end": "2024-12-31T23:59:59Z", "feature_table": "load_forecasting"},
        priority="low",
    )
    async with db.transaction(app.engine, Scope.ALL) as conn:
        hashes = {(await jobs.get(conn, uuid.UUID(j.job_id))).config_hash for j in (a, b)}
    assert len(hashes) == 1
    for j in (a, b):
        await client.cancel_job(j.job_id)


async def test_an_unknown_model_type_number_is_a_clear_error(client):
    stub = client._stub  # a forged request, as a client of a newer API version could send
    request = pb.CreateTrainingJobRequest(tenant_id="acme-corp", model_type=pb.FORECAST, config=config_message(QUICK_START_CONFIG))
    request.config.model_type = 7
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateTrainingJob(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "config.model_type" in err.value.details()
    with pytest.raises(ConfigValidationError) as typed:
        await client.list_jobs(model_type=9)
    assert typed.value.violations[0][0] == "model_type"
