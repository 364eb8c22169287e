"""Job wall time (Create -> COMPLETED) on a 1,000,000-row feature table, divided by a plain
script that reads the same rows from PostgreSQL, derives the same features and calls
lightgbm.train with the same parameters and threads. Goal: at most 1.25.

    python -m bench.pipeline_overhead [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

import asyncpg
import lightgbm as lgb
import numpy as np
import pandas as pd

from bench._stack import load, median, stack
from client import AsyncTrainingClient, pb
from server import demo_data
from storage.db import asyncpg_dsn
from storage.tenancy import feature_schema
from trainers.algorithms.lgbm import booster_params

TENANT = "bench"

HP = {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 7, "num_leaves": 31}
FEATURES = ["temperature", "humidity", "day_of_week", "hour_of_day", "load_lag_1", "load_lag_24"]


async def plain(url: str, start: str, end: str, threads: int) -> float:
    """What a data scientist would write by hand, timed end to end."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    buf = io.BytesIO()
    await conn.copy_from_query(
        # The tenant's own schema (one per tenant: storage.tenancy), read as its owner.
        f'SELECT "timestamp", load, temperature, humidity FROM "{feature_schema(TENANT)}".load_forecasting '  # noqa: S608 - our constant
        'WHERE tenant_id = $1 AND "timestamp" BETWEEN $2 AND $3 ORDER BY "timestamp"',
        TENANT,
        pd.Timestamp(start, tz="UTC").to_pydatetime(),
        pd.Timestamp(end, tz="UTC").to_pydatetime(),
        output=buf,
        format="csv",
        header=True,
    )
    await conn.close()
    buf.seek(0)
    df = pd.read_csv(buf, engine="pyarrow")
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    by_time = df.set_index("timestamp")["load"]
    for h in (1, 24):
        df[f"load_lag_{h}"] = by_time.reindex(df["timestamp"] - pd.Timedelta(hours=h)).to_numpy()
    df["day_of_week"] = df["timestamp"].dt.day_of_week
    df["hour_of_day"] = df["timestamp"].dt.hour
    df = df.dropna().reset_index(drop=True)
    cut = df["timestamp"].iloc[0] + (df["timestamp"].iloc[-1] - df["timestamp"].iloc[0]) * 0.8
    train, valid = df[df["timestamp"] <= cut], df[df["timestamp"] > cut]
    params, rounds = booster_params(HP, seed=42, num_threads=threads)
    booster = lgb.train(params, lgb.Dataset(train[FEATURES].to_numpy(), train["load"].to_numpy()), num_boost_round=rounds)
    pred = booster.predict(valid[FEATURES].to_numpy())
    float(np.mean(np.abs(pred - valid["load"].to_numpy())))
    return time.perf_counter() - t0


async def main(rows: int, repeats: int) -> None:
    frame = demo_data.generate("2010-01-01 00:00", "2030-01-01 00:00", freq="5min").iloc[:rows]
    start, end = str(frame["timestamp"].iloc[0].tz_localize(None)), str(frame["timestamp"].iloc[-1].tz_localize(None))
    async with stack() as app:
        await load(app, TENANT, "load_forecasting", frame)
        config = {
            "model_type": "forecast",
            "algorithm": "lgbm",
            "hyperparameters": HP,
            "features": FEATURES,
            "target": "load",
            "training_start": start,
            "training_end": end,
            "validation_split": 0.2,
            "random_seed": 42,
        }
        threads = app.executor.job_cpus
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}", timeout=600) as c:

            async def job() -> tuple[float, pb.TrainingJob]:
                t0 = time.perf_counter()
                created = await c.create_job(TENANT, "forecast", config)
                done = await c.wait(created.job_id)
                assert done.status == pb.COMPLETED, done.error
                return time.perf_counter() - t0, done

            cold, _ = await job()  # the first job also starts a Ray worker and imports LightGBM there
            jobs, plains, last = [], [], None
            for _ in range(repeats):
                seconds, last = await job()
                jobs.append(seconds)
                plains.append(await plain(app.database_url, start, end, threads))
    j, p = median(jobs), median(plains)
    print(f"pipeline_overhead: {rows:,} rows, {int(last.metrics['training_data_size']):,} used, {threads} thread(s), median of {repeats}")
    print(f"  job   Create->COMPLETED : {j:7.2f} s   (cold first job: {cold:.2f} s)   runs {', '.join(f'{x:.2f}' for x in jobs)}")
    print(f"  plain read+train script: {p:7.2f} s   runs {', '.join(f'{x:.2f}' for x in plains)}")
    print(f"  ratio job / plain      : {j / p:7.3f}   (goal <= 1.25)")
    print(f"  job training step      : {last.metrics['training_duration_seconds']:.2f} s, MAE {last.metrics['mae']:.3f}")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--rows", "5000", "--repeats", "1"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    asyncio.run(main(a.rows, a.repeats))


if __name__ == "__main__":
    cli()
