"""What API keys cost a request: GetTrainingJob p50/p99 with authentication required (a
tenant's key in the call) against the same server setup with authentication off, in one
run. Two servers in this process on one database (the same engine, the same job); a
second process sends one request at a time, alternating rounds between them.

    python -m bench.auth_overhead [--rounds 10] [--per-round 500]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench._stack import READ_ONLY_JOB, median, pct, stack
from client import AsyncTrainingClient
from server.api.app import App
from server.settings import Settings

ADMIN_KEY = "bench-admin-" + "0" * 32


def measure(on: str, off: str, key: str, job_id: str, rounds: int, per_round: int) -> tuple[list[float], list[float]]:
    """Runs in its own process: sequential GetTrainingJob calls, rounds alternating."""

    async def run() -> tuple[list[float], list[float]]:
        out: dict[str, list[float]] = {"on": [], "off": []}
        async with AsyncTrainingClient(on, api_key=key) as with_key, AsyncTrainingClient(off) as without:
            for client in (with_key, without):
                for _ in range(300):
                    await client.get_job(job_id)  # warm up (connections, the key cache, plans)
            for _ in range(rounds):
                for name, client in (("on", with_key), ("off", without)):
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        await client.get_job(job_id)
                        out[name].append(time.perf_counter() - t0)
        return out["on"], out["off"]

    return asyncio.run(run())


async def main(rounds: int, per_round: int) -> None:
    async with stack(auth="required", bootstrap_admin_key=ADMIN_KEY) as on:
        on.dispatcher.pause()
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(_env_file=None, database_url=on.database_url, data_dir=Path(tmp), grpc_port=0, metrics_port=0, auth="off")
            off = App(settings, on.database_url, dispatch=False, executor=on.executor)
            await off.start()
            try:
                async with AsyncTrainingClient(f"127.0.0.1:{on.port}", api_key=ADMIN_KEY) as admin:
                    key = (await admin.create_key("bench")).key
                async with AsyncTrainingClient(f"127.0.0.1:{on.port}", api_key=key) as c:
                    job_id = (await c.create_job("", "forecast", READ_ONLY_JOB)).job_id
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    fut = pool.submit(measure, f"127.0.0.1:{on.port}", f"127.0.0.1:{off.port}", key, job_id, rounds, per_round)
                    with_key, without = await asyncio.wrap_future(fut)
            finally:
                await off.stop(grace=0)
    ms = 1000
    print(f"auth_overhead: GetTrainingJob, {rounds} alternating rounds of {per_round} sequential calls each")
    print(f"  auth off:      p50 {median(without) * ms:.3f} ms   p99 {pct(without, 99) * ms:.3f} ms")
    print(f"  auth required: p50 {median(with_key) * ms:.3f} ms   p99 {pct(with_key, 99) * ms:.3f} ms")
    print(
        f"  added: p50 {(median(with_key) - median(without)) * ms:+.3f} ms   p99 {(pct(with_key, 99) - pct(without, 99)) * ms:+.3f} ms"
        f"   (ratio p50 {median(with_key) / median(without):.3f})"
    )


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--rounds", "1", "--per-round", "20"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=500)
    a = ap.parse_args(argv)
    asyncio.run(main(a.rounds, a.per_round))


if __name__ == "__main__":
    cli()
