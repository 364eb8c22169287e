"""GetTrainingJob at a fixed offered rate (open loop: latency counts from each request's
scheduled time, so a slow server cannot hide queueing), after the machine has settled
from the stack's start-up and 2 s of warm-up at the same rate. Reports p50, p99 and the
rate actually achieved, and the server's own CPU per call and event-loop lag.

    python -m bench.api_latency [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from bench._stack import READ_ONLY_JOB, median, open_loop, pct, settle, stack
from client import AsyncTrainingClient

WARMUP = 2.0  # seconds at the rate before the counted part


def load_generator(target: str, job_id: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """Runs in its own process, so the load does not share the server's event loop."""

    async def run() -> tuple[list[float], int, float]:
        async with AsyncTrainingClient(target) as c:
            for _ in range(200):
                await c.get_job(job_id)  # warm up
            return await open_loop(lambda: c.get_job(job_id), rate, seconds, warmup=WARMUP)

    return asyncio.run(run())


async def main(rate: float, seconds: float) -> None:
    config = READ_ONLY_JOB
    async with stack() as app:
        app.dispatcher.pause()  # the job only needs to exist
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as c:
            job_id = (await c.create_job("bench", "forecast", config)).job_id
        waited = await asyncio.to_thread(settle)
        lags: list[float] = []

        async def loop_lag() -> None:  # how late the server's event loop runs a 5 ms timer
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t0 - 0.005)

        watch = asyncio.create_task(loop_lag())
        cpu0 = time.process_time()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            fut = pool.submit(load_generator, f"127.0.0.1:{app.port}", job_id, rate, seconds)
            latencies, errors, elapsed = await asyncio.wrap_future(fut)
        watch.cancel()
        server_cpu = time.process_time() - cpu0
    n = int(rate * seconds)
    print(f"api_latency: GetTrainingJob offered at {rate:.0f}/s for {seconds:.0f} s ({n} requests, load from a second process)")
    print(f"  (after {waited:.1f} s for the machine to settle from start-up, and 2 s of warm-up at the rate)")
    print(f"  p50 {median(latencies) * 1000:.2f} ms   p99 {pct(latencies, 99) * 1000:.2f} ms   max {max(latencies) * 1000:.2f} ms")
    print(f"  achieved {len(latencies) / elapsed:.0f}/s, errors {errors}")
    calls = int(rate * (seconds + WARMUP))  # the warm-up's calls used the server too
    print(f"  server CPU per call: {server_cpu / calls * 1000:.2f} ms (all its threads)")
    print(f"  server event-loop lag: p99 {pct(lags, 99) * 1000:.2f} ms, max {max(lags) * 1000:.1f} ms")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--rate", "40", "--seconds", "1"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args(argv)
    asyncio.run(main(a.rate, a.seconds))


if __name__ == "__main__":
    cli()
