"""One tenant's open streams against another's calls: tenant A's GetTrainingJob latency
(sequential calls from another process) alone, then while tenant B tries to hold --streams
watch streams (spread over 40 keys, the issue's load), once with B's default stream quota
(max_open_streams 200: the rest are refused with 429) and once with the quota raised to let
them all open (what the service did before the cap). Prints A's p50/p99 in each case and the
ratios to the baseline, measured in one run.

    python -m bench.stream_fairness [--streams 400] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import grpc

from bench._stack import READ_ONLY_JOB, load, median, pct, stack
from client import AsyncTrainingClient, pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from server import demo_data

ADMIN_KEY = "bench-admin-" + "s" * 32
KEYS_B = 40


def measure(target: str, key_a: str, job_a: str, keys_b: list[str], job_b: str, streams: int, calls: int) -> tuple[int, int, list[float]]:
    """Runs in its own process: B opens ``streams`` watch streams (held open), then A makes
    ``calls`` sequential GetTrainingJob calls; (opened, refused, A's latencies)."""

    async def run() -> tuple[int, int, list[float]]:
        channel = grpc.aio.insecure_channel(target)
        stub = pb_grpc.TrainingServiceStub(channel)
        held, refused = [], 0
        for i in range(streams):
            call = stub.WatchTrainingJob(
                pb.WatchTrainingJobRequest(job_id=job_b), metadata=(("authorization", f"Bearer {keys_b[i % len(keys_b)]}"),)
            )
            try:
                await asyncio.wait_for(call.read(), 30)
                held.append(call)
            except grpc.aio.AioRpcError:
                refused += 1
        latencies = []
        async with AsyncTrainingClient(target, api_key=key_a) as a:
            for _ in range(100):
                await a.get_job(job_a)  # warm up
            for _ in range(calls):
                t0 = time.perf_counter()
                await a.get_job(job_a)
                latencies.append(time.perf_counter() - t0)
        for call in held:
            call.cancel()
        await channel.close()
        return len(held), refused, latencies

    return asyncio.run(run())


async def main(streams: int, calls: int) -> None:
    async with stack(auth="required", bootstrap_admin_key=ADMIN_KEY) as app:
        app.dispatcher.pause()  # B's job stays PENDING: its watch streams stay open
        target = f"127.0.0.1:{app.port}"
        await load(app, "globex", demo_data.TABLE, demo_data.generate("2024-01-01", "2024-01-03"))
        async with AsyncTrainingClient(target, api_key=ADMIN_KEY) as admin:
            key_a = (await admin.create_key("acme-corp")).key
            keys_b = [(await admin.create_key("globex")).key for _ in range(KEYS_B)]
            async with AsyncTrainingClient(target, api_key=key_a) as a:
                job_a = (await a.create_job("", "forecast", READ_ONLY_JOB)).job_id
            async with AsyncTrainingClient(target, api_key=keys_b[0]) as b:
                job_b = (await b.create_job("", "forecast", READ_ONLY_JOB)).job_id
            results = {}
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                default = (await admin.get_quota("globex")).max_open_streams
                for name, n, quota in (("alone", 0, default), ("capped", streams, default), ("uncapped", streams, max(streams, default))):
                    await admin.update_quota("globex", max_open_streams=quota)
                    fut = pool.submit(measure, target, key_a, job_a, keys_b, job_b, n, calls)
                    results[name] = await asyncio.wrap_future(fut)
    ms = 1000
    base = median(results["alone"][2])
    print(f"stream_fairness: tenant A's GetTrainingJob, {calls} sequential calls, while tenant B tries {streams} watch streams")
    for name, (opened, refused, lat) in results.items():
        print(
            f"  {name:9s}: B's streams open {opened:4d}, refused {refused:4d}; A p50 {median(lat) * ms:.3f} ms, "
            f"p99 {pct(lat, 99) * ms:.3f} ms, p50 / alone {median(lat) / base:.2f}"
        )


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--streams", "30", "--calls", "50"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=400)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args(argv)
    asyncio.run(main(a.streams, a.calls))


if __name__ == "__main__":
    cli()
