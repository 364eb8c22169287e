"""200 tiny jobs (1,000 rows, 10 trees), one after another: Create -> RUNNING and
Create -> COMPLETED, median and p95. Goals: RUNNING median <= 100 ms; COMPLETED median <= 1.5 s.

    python -m bench.dispatch_latency [--jobs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench._stack import load, median, pct, stack
from client import AsyncTrainingClient, pb
from server import demo_data


async def main(n: int) -> None:
    frame = demo_data.generate("2024-01-01 00:00", "2024-02-11 15:00")  # 1,000 hourly rows
    assert len(frame) == 1000
    config = {
        "model_type": "forecast",
        "algorithm": "lgbm",
        "hyperparameters": {"n_estimators": 10},
        "features": ["temperature", "hour_of_day", "load_lag_24"],
        "target": "load",
        "training_start": "2024-01-01T00:00:00",
        "training_end": "2024-02-11T15:00:00",
    }
    async with stack() as app:
        await load(app, "bench", "load_forecasting", frame)
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as c:
            await c.wait((await c.create_job("bench", "forecast", config)).job_id)  # warm the Ray worker
            running, completed, server_running, server_completed = [], [], [], []
            for _ in range(n):
                t0 = time.perf_counter()
                job = await c.create_job("bench", "forecast", config)
                seen_running = None
                async for snap in c.watch_job(job.job_id):
                    if seen_running is None and snap.status != pb.PENDING:
                        seen_running = time.perf_counter() - t0
                done = time.perf_counter() - t0
                assert snap.status == pb.COMPLETED, snap.error
                running.append(seen_running)
                completed.append(done)
                created = snap.created_at.ToNanoseconds()
                server_running.append((snap.started_at.ToNanoseconds() - created) / 1e9)
                server_completed.append((snap.finished_at.ToNanoseconds() - created) / 1e9)

    def row(name: str, values: list[float]) -> str:
        return f"  {name:<44} median {median(values) * 1000:7.1f} ms   p95 {pct(values, 95) * 1000:7.1f} ms"

    print(f"dispatch_latency: {n} tiny jobs one after another (1,000 rows, 10 trees)")
    print(row("Create -> RUNNING   (client, via Watch)", running))
    print(row("Create -> COMPLETED (client, via Watch)", completed))
    print(row("created_at -> started_at  (server clock)", server_running))
    print(row("created_at -> finished_at (server clock)", server_completed))
    print("  goals: RUNNING median <= 100 ms, COMPLETED median <= 1500 ms")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--jobs", "3"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=200)
    asyncio.run(main(ap.parse_args(argv).jobs))


if __name__ == "__main__":
    cli()
