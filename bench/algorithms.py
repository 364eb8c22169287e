"""For each algorithm, a job's training step on 200,000 rows divided by the same library
call in a plain script (same rows, same parameters, same thread count), in one run, with
each job's metrics. Goal: at most 1.15.

    python -m bench.algorithms [--rows 200000] [--only lgbm,xgboost,rf,mlp,lstm]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from bench._stack import load, stack
from client import AsyncTrainingClient, pb
from server import demo_data
from trainers import preparation, spec
from trainers.local import MemoryReporter

FEATURES = ["temperature", "humidity", "hour_of_day", "day_of_week", "load_lag_1", "load_lag_24"]
HP = {
    "lgbm": {"n_estimators": 200, "num_leaves": 31},
    "xgboost": {"n_estimators": 200, "max_depth": 6},
    "rf": {"n_estimators": 30, "max_depth": 12},
    "mlp": {"epochs": 12, "batch_size": 1024, "hidden_sizes": [64, 32]},
    "lstm": {"epochs": 2, "batch_size": 1024, "lookback": 12, "hidden_size": 16},
}


def plain_fit(algo: str, x: np.ndarray, y: np.ndarray, threads: int, seed: int) -> float:
    """The library's own training call on the same arrays; returns its seconds."""
    hp = HP[algo]
    if algo == "lgbm":
        import lightgbm as lgb

        from trainers.algorithms.lgbm import booster_params

        params, rounds = booster_params(hp, seed=seed, num_threads=threads)
        t = time.perf_counter()
        lgb.train(params, lgb.Dataset(x, y), num_boost_round=rounds)
        return time.perf_counter() - t
    if algo == "xgboost":
        import xgboost as xgb

        from trainers.algorithms.xgb import booster_params

        params, rounds = booster_params(hp, seed=seed, num_threads=threads)
        t = time.perf_counter()
        xgb.train(params, xgb.DMatrix(x, y), num_boost_round=rounds)
        return time.perf_counter() - t
    if algo == "rf":
        from sklearn.ensemble import RandomForestRegressor

        t = time.perf_counter()
        RandomForestRegressor(**hp, random_state=seed, n_jobs=threads).fit(x, y)
        return time.perf_counter() - t
    import torch
    import torch._dynamo

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t = time.perf_counter()  # scaling and windowing count, as they do in the job's fit
    xs = ((x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)).astype("float32")
    ys = ((y - y.mean()) / y.std()).astype("float32")
    if algo == "mlp":
        layers, width = [], x.shape[1]
        for size in hp["hidden_sizes"]:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        inputs, targets = torch.from_numpy(xs), torch.from_numpy(ys)
        forward = lambda b: net(b).squeeze(-1)  # noqa: E731
    else:
        lb = hp["lookback"]
        inputs = torch.from_numpy(np.lib.stride_tricks.sliding_window_view(xs, (lb, xs.shape[1]))[:, 0].copy())
        targets = torch.from_numpy(ys[lb - 1 :])
        lstm, head = torch.nn.LSTM(x.shape[1], hp["hidden_size"], batch_first=True), torch.nn.Linear(hp["hidden_size"], 1)
        net = torch.nn.ModuleList([lstm, head])
        forward = lambda b: head(lstm(b)[0][:, -1, :]).squeeze(-1)  # noqa: E731
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(hp["epochs"]):
        order = torch.randperm(len(inputs))
        for i in range(0, len(order), hp["batch_size"]):
            idx = order[i : i + hp["batch_size"]]
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(forward(inputs[idx]), targets[idx])
            loss.backward()
            optimiser.step()
    return time.perf_counter() - t


async def main(rows: int, only: list[str], repeats: int) -> None:
    frame = demo_data.generate("2015-01-01 00:00", "2030-01-01 00:00", freq="15min").iloc[:rows]
    start = str(frame["timestamp"].iloc[0].tz_localize(None))
    end = str(frame["timestamp"].iloc[-1].tz_localize(None))
    results = []
    async with stack() as app:
        await load(app, "bench", "load_forecasting", frame)
        threads = app.executor.job_cpus
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}", timeout=3600) as c:
            warm = {
                "model_type": "forecast",
                "algorithm": "lgbm",
                "features": FEATURES,
                "target": "load",
                "training_start": start,
                "training_end": end,
                "hyperparameters": {"n_estimators": 2},
            }
            await c.wait((await c.create_job("bench", "forecast", warm)).job_id)  # a warm Ray worker
            for algo in only:
                config = {**warm, "algorithm": algo, "hyperparameters": HP[algo], "random_seed": 42}
                s = spec.build(config)
                # The same rows the job trains on, for the plain call.
                prepared = preparation.prepare(frame[["timestamp", *s.table_columns()]], s, MemoryReporter())
                steps, plains = [], []
                for _ in range(repeats):  # alternate, so both sides see the same machine
                    job = await c.wait((await c.create_job("bench", "forecast", config)).job_id)
                    assert job.status == pb.COMPLETED, job.error
                    steps.append(job.metrics["training_duration_seconds"])
                    plains.append(plain_fit(algo, prepared.data.x_train, prepared.data.y_train, threads, 42))
                results.append((algo, statistics.median(steps), statistics.median(plains), dict(job.metrics)))
    print(
        f"algorithms: {rows:,} rows (15-minute demo load), {threads} thread(s); job training step vs the plain library call, "
        f"median of {repeats}"
    )
    for algo, step, plain, m in results:
        print(
            f"  {algo:8s} job {step:7.2f} s   plain {plain:7.2f} s   ratio {step / plain:5.3f}   "
            f"MAE {m['mae']:.3f}  RMSE {m['rmse']:.3f}  R2 {m['r2_score']:.3f}  skill {m.get('skill', float('nan')):.3f}"
        )
    print("  goal: ratio <= 1.15")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--rows", "3000", "--repeats", "1"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--only", default=",".join(HP))
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    asyncio.run(main(a.rows, a.only.split(","), a.repeats))


if __name__ == "__main__":
    cli()
