"""Running it unattended, measured in one run on the real stack (embedded PostgreSQL, local
Ray, the gRPC server):

1. Scheduler drift: ``--schedules`` per-second schedules fired for ``--seconds`` by two
   schedulers on one database (two replicas' loops): how late each firing ran (p50, p95, max),
   and that every firing made exactly one job (duplicates and gaps counted from the database).
2. MLflow overhead: the quick-start job (LightGBM, a year of hourly rows) with and without
   ``mlflow_tracking`` to the default local store, alternating, ``--repeats`` each: the job's
   wall time (created -> finished) and its training step, as ratios of the medians.

    python -m bench.operations [--seconds 20] [--schedules 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from bench._stack import load, median, pct, stack
from client import AsyncTrainingClient, pb
from server import demo_data
from server.operations.scheduler import Scheduler

CONFIG = {
    "model_type": "forecast",
    "algorithm": "lgbm",
    "hyperparameters": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 7, "num_leaves": 31},
    "training_start": "2024-01-01T00:00:00",
    "training_end": "2024-12-31T23:00:00",
    "features": ["temperature", "humidity", "day_of_week", "hour_of_day", "load_lag_1", "load_lag_24"],
    "target": "load",
}


async def drift(seconds: float, count: int) -> None:
    async with stack(scheduler_interval_seconds=0.25) as app:
        app.dispatcher.pause()  # only the firings are measured
        await load(app, "acme-corp", demo_data.TABLE, demo_data.generate("2024-01-01", "2024-01-10"))
        second = Scheduler(app.engine, interval=0.25)  # a second replica's loop
        second.start()
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
            config = {**CONFIG, "training_start": "2024-01-02T00:00:00", "training_end": "2024-01-09T00:00:00"}
            await client.update_quota("acme-corp", min_schedule_interval_seconds=1)  # per-second firings: a grant
            made = [await client.create_schedule("acme-corp", "forecast", config, "* * * * * *", priority="low") for _ in range(count)]
            await asyncio.sleep(seconds)
            for s in made:
                await client.pause_schedule(s.schedule_id)
            await asyncio.sleep(1)
            await second.stop()
            duplicates = gaps = jobs = 0
            for s in made:
                found = (await client.list_jobs("acme-corp", schedule_id=s.schedule_id, page_size=1000)).jobs
                times = sorted(j.scheduled_for.seconds for j in found)
                jobs += len(found)
                duplicates += sum(n - 1 for n in Counter(times).values())
                gaps += (times[-1] - times[0] + 1 - len(set(times))) if times else 0
        late = app.scheduler.lateness + second.lateness
        both = (app.scheduler.fired, second.fired)
    print(f"scheduler drift: {count} per-second schedules for {seconds:g} s, two schedulers polling every 0.25 s")
    print(f"  firings {jobs} (jobs), by scheduler {both[0]} + {both[1]}; duplicates {duplicates}, gaps {gaps}")
    p50, p95, worst = (x * 1000 for x in (pct(late, 50), pct(late, 95), max(late)))
    print(f"  late by: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {worst:.0f} ms (last {len(late)} firings)")


async def mlflow_overhead(repeats: int, rounds: int = 2000) -> None:
    async with stack() as app:
        await load(app, "acme-corp", demo_data.TABLE, demo_data.generate("2023-12-01", "2024-12-31 23:00"))
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
            await _tracked_vs_not(client, CONFIG, repeats, "the quick-start job (lgbm, 100 rounds, 8,760 rows)")
            longer = {**CONFIG, "hyperparameters": {"n_estimators": rounds, "learning_rate": 0.02, "num_leaves": 63}}
            await _tracked_vs_not(client, longer, repeats, f"a longer job (lgbm, {rounds:,} rounds, 8,760 rows)")


async def _tracked_vs_not(client: AsyncTrainingClient, base: dict, repeats: int, what: str) -> None:
    """The job alternately without and with tracking; the first of each kind is a warm-up
    (library imports in the Ray worker; MLflow's import and its store's tables)."""
    walls: dict[bool, list[float]] = {False: [], True: []}
    steps: dict[bool, list[float]] = {False: [], True: []}
    firsts: dict[bool, float] = {}
    for i in range(repeats * 2 + 2):
        tracked = i % 2 == 1
        config = {**base, "mlflow_tracking": {"experiment_name": "bench", "run_name": f"run-{i}"}} if tracked else base
        started = time.perf_counter()
        job = await client.wait((await client.create_job("acme-corp", "forecast", config)).job_id)
        wall = time.perf_counter() - started
        if job.status != pb.COMPLETED:
            raise SystemExit(f"a benchmark job failed: {job.error}")
        if tracked not in firsts:
            firsts[tracked] = wall
            continue
        walls[tracked].append(wall)
        steps[tracked].append(job.metrics["training_duration_seconds"])
    w0, w1 = median(walls[False]), median(walls[True])
    s0, s1 = median(steps[False]), median(steps[True])
    print(f"MLflow overhead: {what}, {len(walls[True])} tracked vs {len(walls[False])} not (medians)")
    print(f"  job wall time: {w0:.2f} s -> {w1:.2f} s, ratio {w1 / w0:.3f}, +{w1 - w0:.2f} s (first tracked job: {firsts[True]:.2f} s)")
    print(f"  training step: {s0:.3f} s -> {s1:.3f} s, ratio {s1 / s0:.3f} (every round's metrics sent)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--schedules", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2000, help="rounds of the longer tracked job")
    a = ap.parse_args(argv)
    asyncio.run(drift(a.seconds, a.schedules))
    asyncio.run(mlflow_overhead(a.repeats, a.rounds))


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--seconds", "2", "--schedules", "1", "--repeats", "1", "--rounds", "100"]

if __name__ == "__main__":
    main()
