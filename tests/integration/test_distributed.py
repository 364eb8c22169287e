"""Data-parallel training through the real stack (PostgreSQL, the local Ray, the workers' actors):
each algorithm with a data_parallel backend trains on 2 workers, logs where they ran, and
registers one model whose metrics are close to the single-node model's. The multi-node
cluster tests are in tests/cluster/."""

from __future__ import annotations

import asyncio

import pytest

from client import pb
from tests.conftest import tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

TWO = {"num_workers": 2, "cpus_per_worker": 1, "memory_per_worker": "512MB"}


async def _run(client, config: dict, *, timeout: float = 240):
    job = await client.create_job("acme-corp", "forecast", config)
    done = await asyncio.wait_for(client.wait(job.job_id), timeout)
    assert done.status == pb.COMPLETED, done.error
    lines = [e.message async for e in client.stream_logs(job.job_id, follow=False)]
    return done, lines


@pytest.mark.parametrize(
    ("algorithm", "hyperparameters", "tolerance"),
    [
        # lgbm bins on a shared sample and xgboost all-reduces its sketches: the same trees.
        ("lgbm", {"n_estimators": 60, "num_leaves": 15}, 0.001),
        ("xgboost", {"n_estimators": 60, "max_depth": 4}, 0.001),
        # Each worker's trees see only its shard (half the rows): a weaker forest.
        ("rf", {"n_estimators": 40, "max_depth": 8}, 0.20),
        # DDP: the same steps of the same batch size; only the order of rows differs.
        ("mlp", {"hidden_sizes": [32], "epochs": 20}, 0.03),
        ("lstm", {"hidden_size": 16, "epochs": 3}, 0.03),
    ],
)
async def test_two_workers_train_one_model_close_to_single_node(client, algorithm, hyperparameters, tolerance):
    base = tiny_config(algorithm=algorithm, hyperparameters=hyperparameters, training_start="2024-01-01T00:00:00")
    single, _ = await _run(client, base)
    done, lines = await _run(client, {**base, "distributed": True, "ray_config": TWO})
    assert any(m.startswith("training: data-parallel over 2 workers") for m in lines), lines
    placed = [m for m in lines if m.startswith("training: 2 workers on 1 node")]
    assert placed and "workers 0, 1" in placed[0], lines
    mae, single_mae = done.metrics["mae"], single.metrics["mae"]
    assert abs(mae - single_mae) <= tolerance * single_mae, (mae, single_mae)
    assert done.config.distributed and done.config.ray_config.num_workers == 2
    versions = [v for v in await client.list_models("acme-corp") if v.config.algorithm == algorithm and v.config.distributed]
    assert versions and versions[0].config.ray_config.memory_per_worker == "512MB"
