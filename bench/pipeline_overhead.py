"""Job wall time (Create -> COMPLETED) on a 1,000,000-row feature table, divided by a plain
script that reads the same rows from PostgreSQL, derives the same features and calls
lightgbm.train with the same parameters, on the job's threads in every phase (parsing,
training, predicting: the job is a Ray task of job_cpus). Goal (issue 23): at most 1.15.

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
import pyarrow as pa

from bench._stack import load, median, stack
from client import AsyncTrainingClient, pb
from server import demo_data
from storage.db import asyncpg_dsn
from storage.tenancy import feature_schema
from trainers.algorithms.lgbm import booster_params

TENANT = "bench"

HP = {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 7, "num_leaves": 31}
FEATURES = ["temperature", "humidity", "day_of_week", "hour_of_day", "load_lag_1", "load_lag_24"]


PHASES: dict[str, list[float]] = {}  # the plain script's phases, seconds per run


def _phase(name: str, since: float) -> float:
    now = time.perf_counter()
    PHASES.setdefault(name, []).append(now - since)
    return now


async def plain(url: str, start: str, end: str, threads: int) -> float:
    """What a data scientist would write by hand, timed end to end (and by phase)."""
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
    # The job's CPUs for every phase, as the job gets them (a Ray task of job_cpus: its
    # OMP_NUM_THREADS, which LightGBM's predict and pyarrow's CSV reader follow).
    cpus = pa.cpu_count()
    pa.set_cpu_count(threads)
    try:
        df = pd.read_csv(buf, engine="pyarrow")
    finally:
        pa.set_cpu_count(cpus)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    t = _phase("read", t0)
    by_time = df.set_index("timestamp")["load"]
    for h in (1, 24):
        df[f"load_lag_{h}"] = by_time.reindex(df["timestamp"] - pd.Timedelta(hours=h)).to_numpy()
    df["day_of_week"] = df["timestamp"].dt.day_of_week
    df["hour_of_day"] = df["timestamp"].dt.hour
    df = df.dropna().reset_index(drop=True)
    cut = df["timestamp"].iloc[0] + (df["timestamp"].iloc[-1] - df["timestamp"].iloc[0]) * 0.8
    train, valid = df[df["timestamp"] <= cut], df[df["timestamp"] > cut]
    t = _phase("features", t)
    params, rounds = booster_params(HP, seed=42, num_threads=threads)
    booster = lgb.train(params, lgb.Dataset(train[FEATURES].to_numpy(), train["load"].to_numpy()), num_boost_round=rounds)
    t = _phase("train", t)
    pred = booster.predict(valid[FEATURES].to_numpy(), num_threads=threads)
    float(np.mean(np.abs(pred - valid["load"].to_numpy())))
    _phase("score", t)
    return time.perf_counter() - t0


async def steps(c: AsyncTrainingClient, job: pb.TrainingJob) -> dict[str, float]:
    """Seconds from each step's first log line to the next step's (the last: to finished_at),
    and from created_at to the first step (queue and Ray hop) and from the last to COMPLETED."""
    entries = [e async for e in c.stream_logs(job.job_id, follow=False)]
    firsts: dict[str, float] = {}
    for e in entries:
        if e.step and e.step not in firsts:
            firsts[e.step] = e.time.ToDatetime().timestamp()
    created, finished = job.created_at.ToDatetime().timestamp(), job.finished_at.ToDatetime().timestamp()
    names = list(firsts)
    out = {"queue + start": firsts[names[0]] - created} if names else {}
    for name, after in zip(names, [*names[1:], None], strict=True):
        out[name] = (firsts[after] if after else finished) - firsts[name]
    return out


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
            jobs, plains, last, by_step = [], [], None, {}
            for _ in range(repeats):
                seconds, last = await job()
                jobs.append(seconds)
                for name, took in (await steps(c, last)).items():
                    by_step.setdefault(name, []).append(took)
                plains.append(await plain(app.database_url, start, end, threads))
    j, p = median(jobs), median(plains)
    print(f"pipeline_overhead: {rows:,} rows, {int(last.metrics['training_data_size']):,} used, {threads} thread(s), median of {repeats}")
    print(f"  job   Create->COMPLETED : {j:7.2f} s   (cold first job: {cold:.2f} s)   runs {', '.join(f'{x:.2f}' for x in jobs)}")
    print(f"  plain read+train script: {p:7.2f} s   runs {', '.join(f'{x:.2f}' for x in plains)}")
    print(f"  ratio job / plain      : {j / p:7.3f}   (goal <= 1.15)")
    print(f"  job training step      : {last.metrics['training_duration_seconds']:.2f} s, MAE {last.metrics['mae']:.3f}")
    print("  where the job's time goes (median s): " + ", ".join(f"{k} {median(v):.2f}" for k, v in by_step.items()))
    print("  where the plain script's goes (median s): " + ", ".join(f"{k} {median(v):.2f}" for k, v in PHASES.items()))


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
