"""What a hyperparameter search buys on the demo data: validation MAE of the guide's
quick-start config, of the same config with a 16-trial search (learning rate, leaves,
rounds with early stopping, feature and bagging fractions), and of a hand-tuned config, all
through the real service in one run. Also: the search's wall time at concurrency 1 and 2.

    python -m bench.tuning [--trials 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench._stack import QUICK_START, load, stack
from client import AsyncTrainingClient, pb
from server import demo_data

HAND_TUNED = {
    **QUICK_START,
    "hyperparameters": {"n_estimators": 2000, "learning_rate": 0.03, "num_leaves": 31, "min_data_in_leaf": 40, "feature_fraction": 0.9},
    "early_stopping_rounds": 50,
}


def searched(trials: int, concurrency: int) -> dict:
    return {
        **QUICK_START,
        "hyperparameters": {"max_depth": 7},
        "early_stopping_rounds": 50,
        "tuning": {
            "num_trials": trials,
            "max_concurrent_trials": concurrency,
            "metric": "mae",
            "search_space": {
                "learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.3},
                "num_leaves": {"type": "randint", "lower": 8, "upper": 128},
                "n_estimators": {"type": "choice", "values": [200, 500, 1000, 2000]},
                "feature_fraction": {"type": "uniform", "lower": 0.5, "upper": 1.0},
                "bagging_fraction": {"type": "uniform", "lower": 0.5, "upper": 1.0},
            },
        },
    }


async def run(c: AsyncTrainingClient, config: dict) -> tuple[pb.TrainingJob, float]:
    t0 = time.perf_counter()
    job = await c.create_job("bench", "forecast", config)
    done = await c.wait(job.job_id)
    if done.status != pb.COMPLETED:
        raise SystemExit(f"job ended {pb.JobStatus.Name(done.status)}: {done.error}")
    return done, time.perf_counter() - t0


async def main(trials: int) -> None:
    async with stack() as app:
        await load(app, "bench", demo_data.TABLE, await asyncio.to_thread(demo_data.generate))
        slots = app.executor.capacity()
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}", timeout=3600) as c:
            rows = []
            for name, config in (("quick start", QUICK_START), ("hand-tuned", HAND_TUNED)):
                job, seconds = await run(c, config)
                rows.append((name, job, seconds))
            for concurrency in (1, 2):
                job, seconds = await run(c, searched(trials, concurrency))
                rows.append((f"search, {trials} trials, {concurrency} at a time", job, seconds))
    print(f"tuning: demo data (acme-corp 2024, hourly), lgbm, validation = last 20% of the year; {slots} job slot(s) of 1 CPU")
    for name, job, seconds in rows:
        extra = ""
        if "tuning_trials" in job.metrics:
            extra = f"   best tune-part MAE {job.metrics['tuning_best_score']:.3f}"
        print(f"  {name:<32} validation MAE {job.metrics['mae']:.3f}   RMSE {job.metrics['rmse']:.3f}   wall {seconds:6.1f} s{extra}")
    base, hand = rows[0][1].metrics["mae"], rows[1][1].metrics["mae"]
    tuned = rows[2][1].metrics["mae"]
    if base - hand > 0.01 * base:
        print(f"  the search closes {(base - tuned) / (base - hand):.0%} of the gap between the quick start and the hand-tuned config")
    else:
        print(f"  no gap to close: the hand-tuned config is not better than the quick start here ({hand:.3f} vs {base:.3f})")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--trials", "2"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=16)
    asyncio.run(main(ap.parse_args(argv).trials))


if __name__ == "__main__":
    cli()
