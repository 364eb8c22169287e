"""The service on a real two-node Ray cluster (tests/cluster/conftest.py): distributed
workers placed on both nodes, ResourceError for what the cluster can never hold, a job
that waits PENDING for busy resources and then runs, a search of 4 trials 2 at a time, two
servers that share the cluster's CPUs between them, and a node lost mid-job (the attempt
fails saying so; the automatic retry completes on the node that is left). The tests run in
file order; the node-loss test is last."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from client import ResourceError, pb
from tests.cluster.conftest import ROOT, bare_environment
from tests.conftest import slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

YEAR = {"training_start": "2024-01-01T00:00:00"}


async def _lines(client, job_id: str) -> list[str]:
    return [e.message async for e in client.stream_logs(job_id, follow=False)]


async def _until(client, job_id: str, status: int, timeout: float = 120) -> pb.TrainingJob:
    async def poll() -> pb.TrainingJob:
        async for job in client.watch_job(job_id):
            if job.status == status:
                return job
        raise AssertionError(f"the job ended without reaching {pb.JobStatus.Name(status)}")

    return await asyncio.wait_for(poll(), timeout)


async def test_the_registry_lists_both_nodes_with_their_resources(client):
    (cluster,) = await client.list_clusters()
    assert cluster.status == "RUNNING" and cluster.num_workers == 2
    by_resource = {next(k for k in n.resources if k.endswith("_node")): n for n in cluster.nodes}
    assert by_resource["head_node"].resources["CPU"] == 2 and by_resource["second_node"].resources["CPU"] == 1
    assert cluster.resources["CPU"] == 3


async def test_two_workers_are_placed_on_both_nodes(client):
    config = tiny_config(**YEAR, distributed=True, ray_config={"num_workers": 2, "cpus_per_worker": 1})
    job = await client.create_job("acme-corp", "forecast", config)
    done = await asyncio.wait_for(client.wait(job.job_id), 180)
    assert done.status == pb.COMPLETED, done.error
    (placed,) = [m for m in await _lines(client, job.job_id) if m.startswith("training: 2 workers on")]
    assert placed.startswith("training: 2 workers on 2 nodes"), placed
    assert done.metrics["mae"] > 0


async def test_what_no_node_can_hold_is_a_resource_error(client):
    with pytest.raises(ResourceError, match="bigger than any node"):
        await client.create_job("acme-corp", "forecast", tiny_config(distributed=True, ray_config={"num_workers": 1, "cpus_per_worker": 3}))
    with pytest.raises(ResourceError) as err:
        await client.create_job("acme-corp", "forecast", tiny_config(distributed=True, ray_config={"num_workers": 4, "cpus_per_worker": 1}))
    assert err.value.details["requested_workers"] == "4" and err.value.details["available_workers"] == "3"


async def test_a_job_waits_pending_while_the_cluster_is_busy_then_runs(client):
    busy = await client.create_job("acme-corp", "forecast", slow_config())
    await _until(client, busy.job_id, pb.RUNNING)
    await asyncio.sleep(1)
    (cluster,) = await client.list_clusters()  # per node: what is in use now
    assert sum(n.in_use.get("CPU", 0.0) for n in cluster.nodes) >= 1, cluster.nodes
    wide = tiny_config(distributed=True, ray_config={"num_workers": 3, "cpus_per_worker": 1})
    job = await client.create_job("acme-corp", "forecast", wide)
    await asyncio.sleep(3)
    assert (await client.get_job(job.job_id)).status == pb.PENDING
    waiting = [m for m in await _lines(client, job.job_id) if m.startswith("waiting for resources")]
    assert waiting and "needs 3 CPU" in waiting[0] and "free now 2 CPU" in waiting[0], waiting
    await client.cancel_job(busy.job_id)
    done = await asyncio.wait_for(client.wait(job.job_id), 180)
    assert done.status == pb.COMPLETED, done.error
    assert any(m.startswith("training: 3 workers on 2 nodes") for m in await _lines(client, job.job_id))


async def test_a_search_runs_four_trials_two_at_a_time(client):
    search = {
        "num_trials": 4,
        "max_concurrent_trials": 2,
        "search_space": {"learning_rate": {"type": "loguniform", "lower": 0.03, "upper": 0.3}},
    }
    job = await client.create_job("acme-corp", "forecast", tiny_config(hyperparameters={"n_estimators": 40}, tuning=search))
    done = await asyncio.wait_for(client.wait(job.job_id), 240)
    assert done.status == pb.COMPLETED, done.error
    assert done.metrics["tuning_trials"] == 4
    assert len([m for m in await _lines(client, job.job_id) if m.startswith("tuning: trial ")]) == 4


def _on_the_second_node() -> dict:
    """Run on the second node: where our code and the test preprocessor come from there."""
    import pandas as pd

    import trainers
    from server.execution.runtime import runtime
    from trainers import preprocessors

    runtime()  # as every task and actor of ours starts: it takes in the shipped preprocessors

    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=3, freq="h"), "load": [1.0, 2.0, 3.0], "temperature": 2.0})
    out = preprocessors.apply("load_times_temperature", frame)
    return {"trainers": trainers.__file__, "outputs": list(out.columns)}


async def test_the_second_node_runs_our_code_only_as_the_server_ships_it(ray_executor, cluster):
    bare = [*bare_environment(cluster.temp_dir / "bare"), "-c"]

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*bare, code], capture_output=True, text=True, timeout=120, check=False)

    mine = await asyncio.to_thread(run, "import trainers")
    assert mine.returncode != 0 and "No module named 'trainers'" in mine.stderr, mine.stderr
    libraries = await asyncio.to_thread(run, "import ray, lightgbm, xgboost, torch, sqlalchemy")
    assert libraries.returncode == 0, libraries.stderr

    import ray
    import ray.cloudpickle
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    (second,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "second_node" in n["Resources"]]
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module is not shipped
    probe = ray.remote(_on_the_second_node).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(second, soft=False))
    seen = await asyncio.wait_for(asyncio.wrap_future(probe.remote().future()), 120)
    assert not seen["trainers"].startswith(str(ROOT)) and "runtime_resources" in seen["trainers"], seen
    assert "load_times_temperature" in seen["outputs"], seen


async def test_memory_per_worker_is_held_to_and_a_job_over_it_fails_naming_the_remedy(client):
    two = {"num_workers": 2, "cpus_per_worker": 1}
    over = await client.create_job("acme-corp", "forecast", tiny_config(distributed=True, ray_config={**two, "memory_per_worker": "64MB"}))
    done = await asyncio.wait_for(client.wait(over.job_id), 180)
    assert done.status == pb.FAILED and done.error.reason == "OutOfMemory", done.error
    assert "more than its ray_config.memory_per_worker 64MB" in done.error.message, done.error.message
    assert "num_workers" in done.error.message and "use_sample" in done.error.message
    assert done.attempt == 1  # not retried: the same shards need the same memory
    fits = await client.create_job("acme-corp", "forecast", tiny_config(distributed=True, ray_config={**two, "memory_per_worker": "2GB"}))
    done = await asyncio.wait_for(client.wait(fits.job_id), 180)
    assert done.status == pb.COMPLETED, done.error
    peaks = [m for m in await _lines(client, fits.job_id) if m.startswith("training: the workers' peak memory: ")]
    used = [float(v) for v in peaks[0].removeprefix("training: the workers' peak memory: ").removesuffix(" GiB").split(", ")]
    assert len(used) == 2 and all(0.05 < u < 2 for u in used), peaks


async def test_two_replicas_on_one_cluster_never_admit_more_than_it_holds(client, start_app):
    """Two servers share the database and the 3-CPU cluster: between them, never more than 3
    one-CPU jobs run at once (each alone would admit 3), both claim some, and the rest wait
    PENDING saying for what."""
    await start_app(server_id="replica-b", poll_interval_seconds=0.2)
    jobs = [await client.create_job("acme-corp", "forecast", slow_config()) for _ in range(6)]
    ids = [j.job_id for j in jobs]
    try:
        most, loop = 0, asyncio.get_running_loop()
        deadline = loop.time() + 12
        while loop.time() < deadline:
            states = [(await client.get_job(i)).status for i in ids]
            most = max(most, states.count(pb.RUNNING))
            await asyncio.sleep(0.1)
        assert most == 3, most
        running = [i for i in ids if (await client.get_job(i)).status == pb.RUNNING]
        servers = set()
        for i in running:
            servers |= {m.rsplit(" on ", 1)[1] for m in await _lines(client, i) if m.startswith("attempt 1 started on ")}
        assert "replica-b" in servers and len(servers) == 2, servers
        waiting = [i for i in ids if i not in running]
        assert [(await client.get_job(i)).status for i in waiting] == [pb.PENDING] * 3
        notes = [m for i in waiting for m in await _lines(client, i) if m.startswith("waiting for resources")]
        assert notes and all("free now 0 CPU" in m and m.endswith("(3 jobs running)") for m in notes), notes
    finally:
        for i in ids:
            await client.cancel_job(i)


BIG_SERIES, BIG_HOURS = 230, 2 * 8760  # 230 feeders x 2 years: 4 M rows, enough to show in a process's memory
BIG_ROWS = BIG_SERIES * BIG_HOURS


async def _import_big(database_url: str) -> dict:
    """A table of BIG_ROWS rows (BIG_SERIES feeders), for acme-corp; the config of a job on it."""
    import numpy as np
    import pandas as pd

    from storage import db, features
    from storage.tenancy import Scope

    rng = np.random.default_rng(11)
    stamps = pd.date_range("2023-01-02", periods=BIG_HOURS, freq="h", tz="UTC")
    t = np.arange(BIG_HOURS)
    frame = pd.DataFrame(
        {
            "timestamp": np.tile(stamps, BIG_SERIES),
            "series_id": np.repeat([f"feeder-{i:03d}" for i in range(BIG_SERIES)], BIG_HOURS),
            "load": (100 + 20 * np.sin(2 * np.pi * t / 24))[None, :].repeat(BIG_SERIES, 0).ravel() + rng.normal(0, 3, BIG_ROWS),
            "temperature": rng.normal(10, 4, BIG_ROWS),
            "humidity": rng.uniform(30, 90, BIG_ROWS),
        }
    )
    engine = db.create_engine(database_url, pool_size=1)
    try:
        async with db.transaction(engine, Scope.of("acme-corp")) as conn:
            await features.import_frame(conn, "feeders", frame)
    finally:
        await engine.dispose()
    return tiny_config(
        feature_table="feeders",
        training_start=f"{stamps[0]:%Y-%m-%dT%H:%M:%S}",
        training_end=f"{stamps[-1]:%Y-%m-%dT%H:%M:%S}",
        hyperparameters={"n_estimators": 20, "num_leaves": 15},
    )


def _peaks(lines: list[str]) -> list[float]:
    (line,) = [m for m in lines if m.startswith("training: the workers' peak memory: ")]
    return [float(v) for v in line.removeprefix("training: the workers' peak memory: ").removesuffix(" GiB").split(", ")]


async def test_a_window_too_big_for_one_job_trains_on_workers_that_read_their_own_shards(start_app, database_url):
    """Issue 28, items 1 and 2 on the two-node cluster: the same window fails as a single-node
    job held to AIHUB_JOB_MEMORY (OutOfMemory naming the remedies, not a kill without one),
    and trains distributed with that much memory per worker, each worker reading, checking
    and deriving only its own series (the attempt loads no rows); one worker with that much
    memory fails the same way, naming more num_workers. The limit sits just above what each
    of the two workers was measured to need (the single-node job's own peak varies too much
    from one Ray worker process to the next, warm or not, to measure once and rely on)."""
    from client import AsyncTrainingClient

    config = await _import_big(database_url)
    app = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        two = {"num_workers": 2, "cpus_per_worker": 1}
        measured = await client.create_job(
            "acme-corp", "forecast", {**config, "distributed": True, "ray_config": {**two, "memory_per_worker": "4GB"}}
        )
        run = await asyncio.wait_for(client.wait(measured.job_id), 300)
        assert run.status == pb.COMPLETED, run.error
        lines = await _lines(client, measured.job_id)
        assert any(f"each of 2 workers reads its own shard, by series ({BIG_SERIES} series)" in m for m in lines), lines
        assert any(m.startswith(f"data_loading: {BIG_ROWS} rows loaded by the workers (") for m in lines), lines
        assert any(m.startswith("training: 2 workers on 2 nodes") for m in lines), lines
        # Just above what each worker was measured to need: a process holding the whole
        # window needs about 0.25 GiB per million rows more than one holding half of it.
        limit = f"{round((max(_peaks(lines)) + 0.12) * 1024)}MB"
    await app.stop(grace=0)  # the jobs below are the held server's to claim
    held = await start_app(job_memory=limit)
    async with AsyncTrainingClient(f"127.0.0.1:{held.port}") as client:
        single_job = await client.create_job("acme-corp", "forecast", config)
        done = await asyncio.wait_for(client.wait(single_job.job_id), 240)
        assert done.status == pb.FAILED and done.error.reason == "OutOfMemory", done.error
        assert f"more than the {limit} a single-node job may use here (AIHUB_JOB_MEMORY" in done.error.message, done.error.message
        assert '"distributed": true' in done.error.message and "use_sample" in done.error.message
        assert done.attempt == 1
        one = await client.create_job(
            "acme-corp", "forecast", {**config, "distributed": True, "ray_config": {"num_workers": 1, "memory_per_worker": limit}}
        )
        done = await asyncio.wait_for(client.wait(one.job_id), 240)
        assert done.status == pb.FAILED and done.error.reason == "OutOfMemory" and "num_workers" in done.error.message, done.error
        fits = await client.create_job(
            "acme-corp", "forecast", {**config, "distributed": True, "ray_config": {**two, "memory_per_worker": limit}}
        )
        done = await asyncio.wait_for(client.wait(fits.job_id), 240)
        assert done.status == pb.COMPLETED, done.error
        assert done.metrics["training_data_size"] == run.metrics["training_data_size"]
        assert abs(done.metrics["mae"] - run.metrics["mae"]) <= 0.001 * run.metrics["mae"]


async def test_a_lost_node_fails_the_attempt_and_the_retry_completes(start_app, database_url, demo_frame, cluster):
    from client import AsyncTrainingClient
    from tests.conftest import load_demo

    await load_demo(database_url, demo_frame)
    app = await start_app(retry_base_seconds=20)  # Ray declares a node dead after ~15 s of missed health checks
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        long = {"n_estimators": 3000, "learning_rate": 0.01, "num_leaves": 63}
        config = tiny_config(**YEAR, hyperparameters=long, distributed=True, ray_config={"num_workers": 2, "cpus_per_worker": 1})
        job = await client.create_job("acme-corp", "forecast", config)

        async def placed() -> None:
            async for line in client.stream_logs(job.job_id):
                if line.message.startswith("training: 2 workers on 2 nodes"):
                    return

        await asyncio.wait_for(placed(), 120)
        await asyncio.sleep(1)
        cluster.kill_second()
        try:
            try:
                done = await asyncio.wait_for(client.wait(job.job_id), 150)
            except TimeoutError:
                now = await client.get_job(job.job_id)
                raise AssertionError(f"{pb.JobStatus.Name(now.status)} attempt {now.attempt}: {await _lines(client, job.job_id)}") from None
            assert done.status == pb.COMPLETED, done.error
            lines = await _lines(client, job.job_id)
            assert done.attempt == 2, lines
            lost = [m for m in lines if "lost" in m]
            assert lost, lines
            assert any(m.startswith("training: 2 workers on 1 node") for m in lines), lines
        finally:
            cluster.start_second()
