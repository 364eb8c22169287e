"""The queue without training: no-op jobs (their "task" only records the outcome, as a Ray
task's last write does) through create -> claim -> complete, with one and with two replicas
(each a process running the real Dispatcher on one PostgreSQL).

  * claim+complete per second: N jobs queued first, then the dispatchers drain the queue;
  * jobs per second end to end: 8 creators insert N jobs while the dispatchers run, from the
    first create to the last completion;
  * CreateTrainingJob p50/p99 under 500 concurrent callers (gRPC, from a second process);
  * the bound Ray itself puts on dispatch: no-op Ray tasks per second on this machine.

    python -m bench.queue_throughput [--jobs 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import asyncpg

from bench._stack import READ_ONLY_JOB, median, pct
from server.execution.dispatcher import Dispatcher
from server.execution.payloads import JobPayload, Outcome, TaskSettings
from storage import db, jobs, queue, tenants
from storage.embedded import EmbeddedPostgres
from storage.records import NewJob, Priority
from storage.tenancy import DISPATCHER_ROLE, Scope
from trainers.spec import TrainingSpec

TENANT = "bench"
SPEC = TrainingSpec.from_dict(READ_ONLY_JOB)


class NoopExecutor:
    """Runs each job as a no-op: records it COMPLETED, as a Ray task's last write does."""

    address = None
    job_cpus = 1
    cluster_id = "noop"

    def __init__(self, url: str) -> None:
        self.engine = db.create_engine(url, pool_size=10)
        self.slots = asyncio.Semaphore(10)  # as many "tasks" at once as connections (Ray's workers each have their own)

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def capacity(self) -> int:
        return 1_000_000

    def cluster(self):
        raise RuntimeError("no Ray in this benchmark")

    def totals(self) -> dict[str, float]:
        return {"CPU": 1e9}

    def demand(self, spec: TrainingSpec, totals: dict[str, float]) -> dict[str, float]:
        return {"CPU": 1.0}

    async def run(self, payload: JobPayload) -> Outcome:
        async with self.slots, db.single(self.engine, Scope.of(payload.tenant_id)) as conn:  # as tasks._finish does
            await queue.complete(conn, payload.job_id, payload.attempt, None)
        return Outcome("COMPLETED")


def _new_job() -> NewJob:
    return NewJob(TENANT, "forecast", SPEC.algorithm, Priority.NORMAL, SPEC.to_dict(), {}, config_hash=SPEC.config_hash)


async def _create(url: str, n: int, creators: int = 8) -> None:
    engine = db.create_engine(url, pool_size=creators)
    try:

        async def creator(count: int) -> None:
            for _ in range(count):
                async with db.transaction(engine, Scope.of(TENANT)) as conn:
                    await jobs.create(conn, _new_job())

        await asyncio.gather(*(creator(n // creators + (i < n % creators)) for i in range(creators)))
    finally:
        await engine.dispose()


async def _warm(engine: db.Engine, connections: int) -> None:
    """Open a pool's connections before the clock starts, as a running server has them."""
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.transaction(engine):
            await gate.wait()

    holders = [asyncio.create_task(hold()) for _ in range(connections)]
    await asyncio.sleep(0.5)
    gate.set()
    await asyncio.gather(*holders)


class DoneCounter:
    """How many jobs are COMPLETED, on one connection kept open (a connection per look
    would cost PostgreSQL a process start each time: the instrument's own load)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None

    async def __call__(self) -> int:
        if self.conn is None:
            self.conn = await asyncpg.connect(db.asyncpg_dsn(self.url))
        return int(await self.conn.fetchval("SELECT count(*) FROM training_jobs WHERE status = 'COMPLETED'"))

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def replica(url: str, index: int, start_at: float, until_done: int, seconds: float) -> int:
    """One replica: a Dispatcher with the no-op executor, from ``start_at`` until ``until_done``
    jobs are COMPLETED in all (or ``seconds`` pass). Returns how many it ran."""

    async def run() -> int:
        engine = db.create_engine(url, role=DISPATCHER_ROLE, pool_size=3)
        executor = NoopExecutor(url)
        ran = 0
        d = Dispatcher(
            engine,
            executor,  # type: ignore[arg-type]
            server_id=f"bench-{index}-{uuid.uuid4().hex[:4]}",
            task_settings=TaskSettings(url, "/tmp"),  # noqa: S108 - never written
            poll_interval=0.05,
            lease_seconds=60,
        )
        original = d._execute

        async def counted(job) -> None:
            nonlocal ran
            await original(job)
            ran += 1

        d._execute = counted  # type: ignore[method-assign]
        count_done = DoneCounter(url)
        await count_done()  # connected before the start
        await asyncio.gather(_warm(engine, 3), _warm(executor.engine, 10))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await d.start()
        for _ in range(int(seconds / 0.05)):
            if await count_done() >= until_done:
                break
            await asyncio.sleep(0.05)
        await d.stop()
        await count_done.close()
        await engine.dispose()
        await executor.engine.dispose()
        return ran

    return asyncio.run(run())


async def _reset(url: str) -> None:
    engine = db.create_engine(url, role=None, pool_size=1)
    try:
        async with db.transaction(engine) as conn:
            await conn.execute(db.sql("TRUNCATE training_jobs CASCADE"))
        async with db.transaction(engine, Scope.of(TENANT)) as conn:
            await tenants.update(conn, TENANT, {"max_queued_jobs": 1_000_000, "max_running_jobs": None})
    finally:
        await engine.dispose()


async def _until_done(url: str, n: int, start_at: float, *, concurrent_creates: bool) -> float:
    """Seconds from ``start_at`` (creating the jobs then, if asked) until n jobs are COMPLETED."""
    count_done = DoneCounter(url)
    await count_done()
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.perf_counter()
        if concurrent_creates:
            await _create(url, n)
        for _ in range(300 * 50):  # 5 minutes at most
            if await count_done() >= n:
                break
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        await count_done.close()


def drain(url: str, replicas: int, n: int, *, concurrent_creates: bool) -> tuple[float, list[int]]:
    """Seconds until n no-op jobs are COMPLETED with ``replicas`` dispatchers, and how many each ran."""
    asyncio.run(_reset(url))
    if not concurrent_creates:
        asyncio.run(_create(url, n))
    start_at = time.time() + 3.0  # every replica process imported and ready
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(replicas, mp_context=ctx) as pool:
        futures = [pool.submit(replica, url, i, start_at, n, 300) for i in range(replicas)]
        elapsed = asyncio.run(_until_done(url, n, start_at, concurrent_creates=concurrent_creates))
        ran = [f.result() for f in futures]
    return elapsed, ran


def create_latency(url: str, callers: int, per_caller: int) -> tuple[list[float], int]:
    """CreateTrainingJob from ``callers`` concurrent callers in a second process; the server's
    dispatcher is paused (only the create path is measured)."""
    from server.api.app import App
    from server.settings import Settings

    async def serve_and_measure() -> tuple[list[float], int]:
        await _reset(url)
        with tempfile.TemporaryDirectory() as tmp:
            app = App(
                Settings(_env_file=None, database_url=url, data_dir=Path(tmp), grpc_port=0, metrics_port=0, auth="off"),
                url,
                dispatch=False,
                executor=NoopExecutor(url),  # type: ignore[arg-type]
            )
            await app.start()
            try:
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                    fut = pool.submit(_callers, f"127.0.0.1:{app.port}", callers, per_caller)
                    return await asyncio.wrap_future(fut)
            finally:
                await app.stop(grace=0)

    return asyncio.run(serve_and_measure())


def _callers(target: str, callers: int, per_caller: int) -> tuple[list[float], int]:
    from client import AsyncTrainingClient

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        async with AsyncTrainingClient(target) as c:
            for _ in range(20):
                await c.create_job(TENANT, "forecast", READ_ONLY_JOB)

            async def caller() -> None:
                nonlocal errors
                for _ in range(per_caller):
                    t0 = time.perf_counter()
                    try:
                        await c.create_job(TENANT, "forecast", READ_ONLY_JOB)
                        latencies.append(time.perf_counter() - t0)
                    except Exception:  # noqa: BLE001 - counted and reported
                        errors += 1

            await asyncio.gather(*(caller() for _ in range(callers)))
        return latencies, errors

    return asyncio.run(run())


def ray_bound(n: int = 2000) -> float:
    """No-op Ray tasks per second (submitted all at once, 2 CPUs): the most jobs per second
    Ray could start on this machine, whatever the queue does."""
    import ray

    ours = not ray.is_initialized()  # python -m bench --smoke: the shared local Ray is this process's already
    if ours:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:

        @ray.remote(num_cpus=1)
        def noop() -> int:
            return 1

        ray.get([noop.remote() for _ in range(200)])  # workers up
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(n)])
        return n / (time.perf_counter() - t0)
    finally:
        if ours:
            ray.shutdown()


def main(n: int, callers: int = 500, replicas_list: tuple[int, ...] = (1, 2)) -> None:
    with tempfile.TemporaryDirectory(prefix="aihub-bench-queue-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "postgres")
        url = pg.start()
        db.migrate(url)
        try:
            print(f"queue_throughput: {n} no-op jobs each run (PostgreSQL {'embedded'}, 2 cores shared by everything)")
            for replicas in replicas_list:
                elapsed, ran = drain(url, replicas, n, concurrent_creates=False)
                print(f"  {replicas} replica(s), queue drained: {n / elapsed:7.0f} claim+complete/s ({elapsed:.2f} s; per replica {ran})")
                elapsed, ran = drain(url, replicas, n, concurrent_creates=True)
                rate = n / elapsed
                print(f"  {replicas} replica(s), end to end:    {rate:7.0f} jobs/s create->complete ({elapsed:.2f} s; per replica {ran})")
            latencies, errors = create_latency(url, callers, 10)
            print(
                f"  CreateTrainingJob, {callers} concurrent callers ({len(latencies)} creates): "
                f"p50 {median(latencies) * 1000:.1f} ms  p99 {pct(latencies, 99) * 1000:.1f} ms  errors {errors}"
            )
        finally:
            pg.stop()
    print(f"  Ray bound: {ray_bound():.0f} no-op Ray tasks/s (2 CPUs)")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--jobs", "40", "--callers", "20", "--replicas", "2"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--callers", type=int, default=500)
    ap.add_argument("--replicas", default="1,2", help="dispatcher processes to drain the queue with, one run each")
    a = ap.parse_args(argv)
    main(a.jobs, a.callers, tuple(int(r) for r in a.replicas.split(",")))


if __name__ == "__main__":
    cli()
