"""Forecasts from a registered version (issue 24), in one run on this machine:

(a) one series, 24 hours, by alias through REST (Envoy), warm: p50 and p99 (goal p50 <= 50 ms);
(b) many series (1,000) x 24 hours in one REST request, against a plain script that reads the
    same rows from PostgreSQL, derives the same features with pandas and calls LightGBM's
    predict on the same rows: the ratio of wall times (goal <= 2.0);
(c) where a forecast's time goes, in process on the same rows: deriving the features
    (trainers.preparation.derive) vs the library's predict.

    python -m bench.forecast [--series 1000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd
import requests as http

from bench._stack import free_port, load, median, pct, stack
from client import AsyncTrainingClient, pb
from server import demo_data
from server.api.envoy import Envoy
from server.execution.artifacts import ArtifactStore
from storage import db, features
from storage.tenancy import Scope
from trainers import algorithms, forecasting
from trainers.evaluation import predict_after
from trainers.preparation import derive
from trainers.spec import TrainingSpec, build

TENANT, TABLE = "bench", "meters"
HOURS = 24 * 22  # three weeks of history and the day ahead
ORIGIN = pd.Timestamp("2024-03-21T23:00:00", tz="UTC")
CONFIG = {
    "model_type": "forecast",
    "algorithm": "lgbm",
    "hyperparameters": {"n_estimators": 60, "num_leaves": 31},
    "feature_table": TABLE,
    "training_start": "2024-03-08T00:00:00",
    "training_end": "2024-03-21T23:00:00",
    "features": ["temperature", "hour_of_day", "day_of_week", "load_lag_24", "load_lag_168", "load_roll24_mean"],
    "target": "load",
    "forecast_horizon_hours": 24,
    "known_ahead": ["temperature"],
}


def meters(n: int) -> pd.DataFrame:
    """``n`` series: the demo load scaled per meter; the load is unknown after the origin,
    the temperature (a weather forecast) known."""
    base = demo_data.generate("2024-03-01 00:00", f"{pd.Timestamp('2024-03-01') + timedelta(hours=HOURS - 1):%Y-%m-%d %H:%M}")
    scale = np.random.default_rng(3).uniform(0.2, 5.0, n)
    parts = []
    for i in range(n):
        one = base[["timestamp", "load", "temperature"]].copy()
        one["load"] *= scale[i]
        one.loc[one["timestamp"] > ORIGIN, "load"] = np.nan
        one.insert(1, "series_id", f"m{i:05d}")
        parts.append(one)
    return pd.concat(parts, ignore_index=True)


def plain(booster: lgb.Booster, rows: pd.DataFrame) -> np.ndarray:
    """What a user would write by hand: the same features with pandas, then predict."""
    rows = rows.sort_values(["series_id", "timestamp"])
    g = rows.groupby("series_id")["load"]
    x = pd.DataFrame(
        {
            "temperature": rows["temperature"],
            "hour_of_day": rows["timestamp"].dt.hour,
            "day_of_week": rows["timestamp"].dt.day_of_week,
            "load_lag_24": g.shift(24),
            "load_lag_168": g.shift(168),
            "load_roll24_mean": g.transform(lambda s: s.shift(24).rolling(24, min_periods=1).mean()),
        }
    )
    ahead = (rows["timestamp"] > ORIGIN).to_numpy()
    return booster.predict(x[ahead].to_numpy(dtype="float64"))


async def read_rows(app, spec: TrainingSpec) -> pd.DataFrame:
    back = timedelta(hours=forecasting.history_hours(spec))
    async with db.transaction(app.engine, Scope.of(TENANT)) as conn:
        return await features.read_frame(conn, TABLE, spec.table_columns(), ORIGIN - back, ORIGIN + timedelta(hours=24))


async def shares(app, spec: TrainingSpec, artifact_uri: str, n_series: int) -> None:
    """(c): the forecast's two halves, in process on the rows the service reads."""
    rows = await read_rows(app, spec)
    model = algorithms.get(spec.algorithm).load(ArtifactStore(app.settings.artifacts).model_file(artifact_uri), algorithms.REGRESSION)
    t0 = time.perf_counter()
    future = forecasting.future_frame(rows, spec, ORIGIN, 24)
    derived = derive(future, spec, forecast_after=ORIGIN)
    t1 = time.perf_counter()
    x = derived.frame[list(derived.inputs)].to_numpy(dtype="float64")
    predict_after(model, x[:0], x[(derived.frame["timestamp"] > ORIGIN).to_numpy()])
    t2 = time.perf_counter()
    print(f"(c) in process, {n_series} series: deriving {(t1 - t0) * 1000:.0f} ms ({(t1 - t0) / (t2 - t0):.0%}), "
          f"predict {(t2 - t1) * 1000:.0f} ms ({(t2 - t1) / (t2 - t0):.0%})")  # fmt: skip


async def main(n_series: int, n_requests: int) -> None:
    frame = meters(n_series)
    async with stack() as app:
        await load(app, TENANT, TABLE, frame)
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as c:
            job = await c.wait((await c.create_job(TENANT, "forecast", CONFIG)).job_id)
            assert job.status == pb.COMPLETED, job.error
            (version,) = await c.list_models(TENANT)
            await c.set_alias("production", version.model_id)
        envoy = Envoy(grpc_port=app.port, http_port=free_port())
        await asyncio.to_thread(envoy.start)
        try:
            url = f"{envoy.url}/ai/training/models:forecast"
            session = http.Session()
            one = {"tenant_id": TENANT, "model_type": "forecast", "alias": "production", "horizon_hours": 24, "series": ["m00000"]}

            def ask(body: dict) -> dict:
                resp = session.post(url, data=json.dumps(body), timeout=600)
                assert resp.status_code == 200, resp.text[:500]
                return resp.json()

            for _ in range(5):  # warm: the version loaded on its actor
                await asyncio.to_thread(ask, one)
            times = []
            for _ in range(n_requests):
                t0 = time.perf_counter()
                got = await asyncio.to_thread(ask, one)
                times.append(time.perf_counter() - t0)
            assert len(got["points"]) == 24
            print(f"(a) one series x 24 h by alias via REST, warm, {n_requests} requests: "
                  f"p50 {median(times) * 1000:.1f} ms, p99 {pct(times, 99) * 1000:.1f} ms   (goal p50 <= 50 ms)")  # fmt: skip

            every = {k: v for k, v in one.items() if k != "series"}
            service, script = [], []
            spec = build(CONFIG)
            booster = lgb.Booster(model_file=str(ArtifactStore(app.settings.artifacts).model_file(version.artifact_uri)))
            for _ in range(3):
                t0 = time.perf_counter()
                answer = await asyncio.to_thread(ask, every)
                service.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                rows = await read_rows(app, spec)
                expected = plain(booster, rows)
                script.append(time.perf_counter() - t0)
            got = np.array([p["forecast"] for p in answer["points"]])
            assert len(got) == n_series * 24 and np.allclose(got, expected, rtol=1e-9), "the service and the plain script differ"
            ratio = min(service) / min(script)
            print(f"(b) {n_series} series x 24 h in one REST request: {min(service) * 1000:.0f} ms; plain script (read, pandas "
                  f"features, LightGBM predict) {min(script) * 1000:.0f} ms: ratio {ratio:.2f}   (goal <= 2.0)")  # fmt: skip

            await shares(app, spec, version.artifact_uri, n_series)
        finally:
            await asyncio.to_thread(envoy.stop)


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--series", "5", "--requests", "10"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args(argv)
    asyncio.run(main(a.series, a.requests))


if __name__ == "__main__":
    cli()
