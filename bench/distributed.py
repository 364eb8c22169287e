"""Distributed training at scale on a local two-node Ray cluster (each node 1 CPU, started
with ``ray start`` as make run's AIHUB_LOCAL_RAY_NODES=2 does): lgbm, xgboost and mlp on
2,000,000 rows (228 series of a year of hours) with 1 worker vs 2 workers (the service's
gang of Ray actors), and the same model on one node in the attempt itself; wall time of the five steps, the
training step's share, validation MAE. Then a hyperparameter search of 8 trials at
concurrency 1 vs 2 (on the demo year). All in one run; the pipeline is driven directly
(trainers.pipeline with the service's Ray distributor and tuner), data from memory.

    python -m bench.distributed [--rows 2000000]

It runs itself inside a private network namespace (server/isolation.py): Ray's nodes and
the collective libraries listen on every interface.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import pandas as pd

from bench import _cluster
from server import demo_data, isolation

YEAR_ROWS = 8784  # 2024 is a leap year
FEATURES = ["temperature", "humidity", "day_of_week", "hour_of_day", "load_lag_1", "load_lag_24"]
CASES = [
    ("lgbm", {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 63}),
    ("xgboost", {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 7}),
    ("mlp", {"hidden_sizes": [64, 32], "epochs": 2, "batch_size": 4096}),
]


def frame(rows: int) -> pd.DataFrame:
    """``rows`` hourly rows in 2024 (and the December before, for lags), as series of a year."""
    parts = []
    for i in range(math.ceil(rows / YEAR_ROWS)):
        part = demo_data.generate("2023-12-31 00:00", "2024-12-31 23:00", seed=100 + i)
        part["load"] *= 0.5 + (i % 10) / 10  # feeders of different sizes
        part["series_id"] = f"feeder-{i:03d}"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def config(algorithm: str, hyperparameters: dict, workers: int | None) -> dict:
    out = {
        "model_type": "forecast",
        "algorithm": algorithm,
        "hyperparameters": hyperparameters,
        "training_start": "2024-01-01T00:00:00",
        "training_end": "2024-12-31T23:00:00",
        "features": FEATURES,
        "target": "load",
        "validation_split": 0.2,
        "random_seed": 42,
    }
    if workers:
        out |= {"distributed": True, "ray_config": {"num_workers": workers, "cpus_per_worker": 1}}
    return out


def run(cfg: dict, data: object) -> tuple[float, dict[str, float]]:
    from server.execution.distributed import RayDistributor
    from server.execution.tuning import RayTuner
    from trainers import pipeline
    from trainers.local import FolderRegistry, MemoryReporter
    from trainers.spec import build

    spec = build(cfg)
    distributor = RayDistributor(spec.workers) if spec.workers else None
    started = time.perf_counter()
    result = pipeline.run(
        spec,
        data=data,  # type: ignore[arg-type]
        reporter=MemoryReporter(),
        registry=FolderRegistry(),
        tuner=RayTuner(cpus_per_trial=1, seed=spec.random_seed),
        distributor=distributor,
    )
    return time.perf_counter() - started, dict(result.metrics)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--only", default=",".join(name for name, _ in CASES), help="algorithms, comma-separated")
    parser.add_argument("--workers", default="0,1,2", help="runs: 0 = one node, in the attempt; N = N workers")
    parser.add_argument("--trials", type=int, default=8, help="trials of the search (0: no search)")
    parser.add_argument(
        "--running-ray",
        action="store_true",
        help="use the Ray this process is already connected to (python -m bench --smoke's shared one, in its namespace) "
        "instead of starting a two-node cluster",
    )
    args = parser.parse_args(argv)
    cases = [(name, hp) for name, hp in CASES if name in args.only.split(",")]
    runs = [int(w) or None for w in args.workers.split(",")]
    if not isolation.isolated():
        if args.running_ray:
            raise SystemExit("--running-ray: only inside the private network namespace (server/isolation.py)")
        os.execv(sys.executable, [sys.executable, "-m", "server.isolation", "--", sys.executable, "-m", "bench.distributed", *sys.argv[1:]])  # noqa: S606

    from trainers.local import FrameSource

    with _cluster.two_nodes(1, running=args.running_ray) as where:
        t0 = time.perf_counter()
        big = frame(args.rows)
        took = time.perf_counter() - t0
        print(f"{len(big):,} rows in {big['series_id'].nunique()} series, generated in {took:.1f} s; {where}")
        data = FrameSource(big)
        print(f"{'algorithm':10} {'run':22} {'wall s':>8} {'train s':>8} {'share':>6} {'MAE':>8}")
        timings: dict[tuple[str, int], float] = {}
        for algorithm, hp in cases:
            for workers in runs:
                wall, metrics = run(config(algorithm, hp, workers), data)
                train = metrics["training_duration_seconds"]
                label = "one node, in the attempt" if workers is None else f"{workers} worker{'s' if workers > 1 else ''} (actors)"
                print(f"{algorithm:10} {label:22} {wall:8.1f} {train:8.1f} {train / wall:6.0%} {metrics['mae']:8.4f}", flush=True)
                timings[(algorithm, workers or 0)] = train
        print(
            "\nthe training step, taken apart: compute C = the one-node step; the workers' start S = T1 - C;"
            "\nexchange X = T2 - S - C/2 (histograms, gradients); projected T(N) = S + C/N + X log2(N), N workers on N machines"
        )
        for algorithm, _ in cases:
            if not {(algorithm, 0), (algorithm, 1), (algorithm, 2)} <= set(timings):
                continue  # taken apart only with the three runs
            c, t1, t2 = timings[(algorithm, 0)], timings[(algorithm, 1)], timings[(algorithm, 2)]
            start, exchange = max(0.0, t1 - c), max(0.0, t2 - (t1 - c) - c / 2)
            projected = ", ".join(f"N={n}: {start + c / n + exchange * math.log2(n):.1f} s" for n in (4, 8, 16))
            print(f"{algorithm:10} C {c:.1f} s, S {start:.1f} s, X {exchange:.1f} s; T1 {t1:.1f} s, T2 {t2:.1f} s; {projected}")
        demo = FrameSource(demo_data.generate("2023-12-31 00:00", "2024-12-31 23:00"))
        search = {
            "num_trials": args.trials,
            "metric": "mae",
            "search_space": {
                "learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.3},
                "num_leaves": {"type": "randint", "lower": 8, "upper": 128},
            },
        }
        print(f"\nsearch: {args.trials} trials of lgbm (500 rounds, early stopping 50) on the demo year")
        for concurrency in (1, 2) if args.trials else ():
            cfg = config("lgbm", {"n_estimators": 500}, None) | {
                "early_stopping_rounds": 50,
                "tuning": {**search, "max_concurrent_trials": concurrency},
            }
            wall, metrics = run(cfg, demo)
            best, mae = metrics["tuning_best_score"], metrics["mae"]
            print(f"  concurrency {concurrency}: {wall:6.1f} s wall, best tune MAE {best:.3f}, validation MAE {mae:.3f}")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--rows", "9000", "--only", "lgbm", "--workers", "2", "--trials", "0"]

if __name__ == "__main__":
    main()
