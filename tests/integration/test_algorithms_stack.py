"""Every algorithm as a real job: gRPC server, PostgreSQL, Ray workers (torch, XGBoost,
scikit-learn imported there), artifacts in each library's own format."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from client import pb
from tests.conftest import tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

HP = {
    "lgbm": {"n_estimators": 30},
    "xgboost": {"n_estimators": 30},
    "rf": {"n_estimators": 20},
    "mlp": {"epochs": 10, "hidden_sizes": [16]},
    "lstm": {"epochs": 3, "lookback": 12, "hidden_size": 8},
}
SUFFIX = {
    "lgbm": ".txt",
    "xgboost": ".json",
    "rf": ".skops",
    "mlp": ".safetensors",
    "lstm": ".safetensors",
    "isolation_forest": ".skops",
    "ecod": ".safetensors",
}


async def test_every_algorithm_runs_as_a_job(client, app, demo_frame):
    # An anomaly table: the demo load with labelled feeder trips.
    frame = demo_frame[(demo_frame.timestamp >= "2024-01-01") & (demo_frame.timestamp < "2024-04-01")].copy()
    rng = np.random.default_rng(5)
    hit = rng.choice(np.arange(100, len(frame)), size=60, replace=False)
    frame["is_anomaly"] = 0.0
    frame.iloc[hit, frame.columns.get_loc("load")] *= 0.2
    frame.iloc[hit, frame.columns.get_loc("is_anomaly")] = 1.0
    await client.import_data("acme-corp", "anomaly_detection", frame.to_csv(index=False).encode())

    window = {"training_start": "2024-01-01T00:00:00", "training_end": "2024-03-31T23:00:00"}
    jobs = {}
    for algo, hp in HP.items():
        jobs[(algo, "forecast")] = await client.create_job(
            "acme-corp", "forecast", tiny_config(algorithm=algo, hyperparameters=hp, **window)
        )
        anomaly = tiny_config(
            model_type="anomaly",
            algorithm=algo,
            hyperparameters=hp,
            target="is_anomaly",
            features=["load", "load_lag_1", "hour_of_day"],
            **window,
        )
        jobs[(algo, "anomaly")] = await client.create_job("acme-corp", "anomaly", anomaly)
    jobs[("isolation_forest", "anomaly")] = await client.create_job(
        "acme-corp",
        "anomaly",
        tiny_config(
            model_type="anomaly",
            algorithm="isolation_forest",
            hyperparameters={"n_estimators": 50},
            target="load",
            features=["load_lag_1", "hour_of_day"],
            label_column="is_anomaly",
            **window,
        ),
    )
    jobs[("ecod", "anomaly")] = await client.create_job(
        "acme-corp",
        "anomaly",
        tiny_config(
            model_type="anomaly", algorithm="ecod", hyperparameters={}, target="load", features=[], label_column="is_anomaly", **window
        ),
    )
    done = dict(zip(jobs, await asyncio.wait_for(asyncio.gather(*(client.wait(j.job_id) for j in jobs.values())), 600)))
    for (algo, model_type), job in done.items():
        assert job.status == pb.COMPLETED, (algo, model_type, job.error)
        m = job.metrics
        if model_type == "forecast":
            assert 0 < m["mae"] <= m["rmse"] and "skill" in m, (algo, dict(m))
        else:
            assert "threshold" in m and 0 <= m["anomaly_rate"] <= 1, (algo, dict(m))
    versions = {(v.algorithm, pb.ModelType.Name(v.model_type).lower()): v for v in await client.list_models("acme-corp")}
    for algo, model_type in jobs:
        path = Path(urlparse(versions[(algo, model_type)].artifact_uri).path)
        assert path.suffix == SUFFIX[algo] and path.stat().st_size > 0
    assert done[("lgbm", "anomaly")].metrics["f1"] > 0.5
