"""How the cost grows with the data (issue 28, item 7): 1 M, 5 M and 20 M rows, and 1,000
series x 2 years of hours (17.5 M rows), on a local two-node Ray cluster (each node 2 logical
CPUs over this machine's cores, so that 4 workers fit).

For each size: the import rate into PostgreSQL (``FileImport``, the path of ``aihub data
import`` and of REST and gRPC imports, on an embedded PostgreSQL of its own, 500,000-row
chunks), then one lgbm job single-node and with 2 and 4 workers. Each job's attempt runs as
the service runs it, a Ray task in a fresh worker process (``max_calls=1``) reading from
PostgreSQL: a single-node attempt the whole window, a distributed one only the outline (its
workers read and prepare their own shards: trainers/shards.py). Printed per run: wall time,
preparation (loading, checking and deriving) and training time, the attempt's peak RSS
(sampled every 50 ms) and every worker's (their own memory guard's peak, from their start).
Then the slopes per million rows, and a projection to 8 and
32 nodes from the largest size: T(N) = S + C/N + X log2(N), the compute C from the one-node
run, the workers' start S and the exchange X from the 2- and 4-worker runs.

    python -m bench.scale [--sizes 1,5,20] [--series 1000] [--workers 0,2,4]

It runs itself inside a private network namespace (server/isolation.py), as bench.distributed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import _cluster, distributed
from server import isolation

FEATURES = ["temperature", "hour_of_day", "day_of_week", "load_lag_24", "load_lag_168"]
CHUNK = 500_000
TENANT = "bench"
HOURS_PER_YEAR = 8760


def frame(rows: int, series: int | None = None) -> pd.DataFrame:
    """``rows`` hourly rows: series of a year each, or ``series`` series sharing the rows."""
    hours = rows // series if series else min(rows, HOURS_PER_YEAR)
    count = series or math.ceil(rows / hours)
    rng = np.random.default_rng(7)
    t, start = np.arange(hours), np.datetime64("2023-01-01T00:00", "us")
    daily, weekly = np.sin(2 * np.pi * t / 24), np.sin(2 * np.pi * t / 168)
    temperature = 12 + 8 * np.sin(2 * np.pi * t / HOURS_PER_YEAR) + rng.normal(0, 1.5, hours)
    scale = rng.uniform(0.5, 2.0, count)[:, None]
    load = scale * (100 + 20 * daily + 10 * weekly + 0.8 * np.abs(temperature - 15)) + rng.normal(0, 2, (count, hours))
    out = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(np.tile(start + t.astype("timedelta64[h]"), count)).tz_localize("UTC"),
            # A categorical, as the service reads it: 20 M Python strings would be the frame's largest part.
            "series_id": pd.Categorical.from_codes(np.repeat(np.arange(count), hours), [f"s{i:05d}" for i in range(count)]),
            "load": load.ravel().round(3),
            "temperature": np.tile(temperature.round(2), count),
        }
    )
    return out.iloc[:rows] if not series else out


def config(data: pd.DataFrame, workers: int | None, rounds: int) -> dict[str, Any]:
    window = {
        "training_start": (data["timestamp"].min() + pd.Timedelta(hours=168)).strftime("%Y-%m-%dT%H:%M:%S"),
        "training_end": data["timestamp"].max().strftime("%Y-%m-%dT%H:%M:%S"),
        "features": FEATURES,
    }
    return distributed.config("lgbm", {"n_estimators": rounds, "learning_rate": 0.1, "num_leaves": 63}, workers) | window


# --- import -------------------------------------------------------------------------------
async def _import(url: str, table: str, data: pd.DataFrame) -> float:
    from storage import db, features
    from storage.tenancy import Scope

    engine = db.create_engine(url)
    try:
        chunks = (data.iloc[i : i + CHUNK] for i in range(0, len(data), CHUNK))
        started = time.perf_counter()
        async with db.transaction(engine, Scope.of(TENANT)) as conn:
            job = features.FileImport(conn, table)
            await job.add_all(chunks)
            await job.finish()
        return time.perf_counter() - started
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    from storage import db
    from storage.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="aihub-bench-scale-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "postgres")
        url = pg.start()
        try:
            db.migrate(url)
            yield url
        finally:
            pg.stop()


# --- one job, as the service runs its attempt ---------------------------------------------
def _attempt(cfg: dict[str, Any], url: str) -> dict[str, Any]:
    """A job's attempt in a fresh Ray worker, reading from PostgreSQL as the service's does
    (a distributed job's workers read their own shards): its timings, peak RSS and the
    workers' peaks."""
    import psutil

    from server.execution.adapters import DbDataSource
    from server.execution.distributed import RayDistributor
    from server.execution.runtime import runtime
    from trainers import pipeline
    from trainers.local import FolderRegistry, MemoryReporter
    from trainers.spec import build

    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], me.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    stamps: dict[str, float] = {}

    class Timed(MemoryReporter):
        def step(self, name: str, progress: int) -> None:
            stamps.setdefault(name, time.perf_counter())
            super().step(name, progress)

    spec = build(cfg)
    reporter = Timed()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as models:
        rt = runtime()
        result = pipeline.run(
            spec,
            data=DbDataSource(rt, rt.engine(url), TENANT),
            reporter=reporter,
            registry=FolderRegistry(Path(models)),
            tuner=None,
            distributor=RayDistributor(spec.workers, url, TENANT) if spec.workers else None,
        )
    wall = time.perf_counter() - started
    done.set()
    peak[0] = max(peak[0], me.memory_info().rss)
    lines = [m for _, m in reporter.lines if m.startswith("training: the workers' peak memory: ")]
    workers = [float(v) for v in lines[0].split(": ")[-1].removesuffix(" GiB").split(", ")] if lines else []
    prep = stamps.get("training", started) - started
    return {
        "wall": wall,
        "prep": prep,
        "train": float(result.metrics["training_duration_seconds"]),
        "attempt_gib": peak[0] / 2**30,
        "workers_gib": workers,
        "mae": float(result.metrics["mae"]),
    }


def run_job(cfg: dict[str, Any], url: str) -> dict[str, Any]:
    import ray

    task = ray.remote(max_calls=1)(_attempt).options(num_cpus=0 if cfg.get("distributed") else 1, max_retries=0)
    return ray.get(task.remote(cfg, url))


def _slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(xs, ys, 1)[0]) if len(set(xs)) > 1 else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,5,20", help="millions of rows (series of a year each), comma-separated")
    parser.add_argument("--series", type=int, default=1000, help="the many-series case: this many series x 2 years (0: none)")
    parser.add_argument("--workers", default="0,2,4", help="runs: 0 = one node, N = N workers")
    parser.add_argument("--rounds", type=int, default=50, help="boosting rounds of each job")
    parser.add_argument("--running-ray", action="store_true", help="use the Ray this process is connected to (python -m bench --smoke)")
    args = parser.parse_args(argv)
    if not isolation.isolated():
        if args.running_ray:
            raise SystemExit("--running-ray: only inside the private network namespace (server/isolation.py)")
        os.execv(sys.executable, [sys.executable, "-m", "server.isolation", "--", sys.executable, "-m", "bench.scale", *sys.argv[1:]])  # noqa: S606
    cases = [(f"{float(s):g} M rows", int(float(s) * 1_000_000), None) for s in args.sizes.split(",")]
    if args.series:
        cases.append((f"{args.series} series x 2 y", args.series * 2 * HOURS_PER_YEAR, args.series))
    runs = [int(w) for w in args.workers.split(",")]

    results: dict[tuple[str, int], dict[str, Any]] = {}
    with _postgres() as url, _cluster.two_nodes(2, running=args.running_ray) as where:
        print(where)
        head = f"{'case':22} {'rows':>11} {'import/s':>10} {'run':>9} {'wall s':>7} {'prep s':>7} {'train s':>8} {'attempt GiB':>12}"
        print(f"{head}  workers GiB")
        for label, rows, series in cases:
            data = frame(rows, series)
            table = f"scale_{len(results)}"
            took = asyncio.run(_import(url, table, data))
            for workers in runs:
                r = run_job(config(data, workers or None, args.rounds) | {"feature_table": table}, url)
                results[(label, workers)] = r | {"rows": len(data)}
                run = "one node" if not workers else f"{workers} workers"
                peaks = ", ".join(f"{w:.2f}" for w in r["workers_gib"]) or "-"
                print(
                    f"{label:22} {len(data):11,} {len(data) / took:10,.0f} {run:>9} {r['wall']:7.1f} {r['prep']:7.1f} "
                    f"{r['train']:8.1f} {r['attempt_gib']:12.2f}  {peaks}",
                    flush=True,
                )
            del data
    print("\nslopes per million rows (over the sizes of a year per series):")
    sized = [label for label, _, series in cases if series is None]
    for workers in runs:
        xs = [results[(label, workers)]["rows"] / 1e6 for label in sized]
        pick = {k: [results[(label, workers)][k] for label in sized] for k in ("wall", "prep", "train", "attempt_gib")}
        worker_peak = [max(results[(label, workers)]["workers_gib"], default=0.0) for label in sized]
        print(
            f"  {'one node' if not workers else f'{workers} workers':>9}: wall {_slope(xs, pick['wall']):.2f} s, prep "
            f"{_slope(xs, pick['prep']):.2f} s, train {_slope(xs, pick['train']):.2f} s, attempt RSS "
            f"{_slope(xs, pick['attempt_gib']):.3f} GiB" + (f", largest worker RSS {_slope(xs, worker_peak):.3f} GiB" if workers else "")
        )
    if {0, 2, 4} <= set(runs) and sized:
        largest = sized[-1]
        c, t2, t4 = (results[(largest, w)]["train"] for w in (0, 2, 4))
        exchange = max(0.0, t4 - t2 + c / 4)
        start = max(0.0, t2 - c / 2 - exchange)
        projected = ", ".join(f"N={n}: {start + c / n + exchange * math.log2(n):.1f} s" for n in (8, 32))
        print(f"\nprojection from {largest}: C {c:.1f} s, S {start:.1f} s, X {exchange:.1f} s per doubling; training {projected}")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--sizes", "0.02", "--series", "3", "--workers", "0,2", "--rounds", "5"]

if __name__ == "__main__":
    main()
