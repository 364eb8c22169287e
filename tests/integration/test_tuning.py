"""Parallel hyperparameter search with Ray Tune through the real stack: trials fit on the
fit part and are scored on the tune part, their parameters and scores are logged, the job's
metrics carry tuning_trials / tuning_best_score, and the registered version records the
winning hyperparameters."""

from __future__ import annotations

import asyncio

import pytest

from client import pb
from tests.conftest import tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEARCH = {
    "num_trials": 4,
    "max_concurrent_trials": 2,
    "metric": "mae",
    "search_space": {
        "learning_rate": {"type": "loguniform", "lower": 0.03, "upper": 0.3},
        "num_leaves": {"type": "randint", "lower": 4, "upper": 31},
    },
}


async def test_a_search_runs_its_trials_and_trains_with_the_winner(client):
    config = tiny_config(hyperparameters={"n_estimators": 60}, early_stopping_rounds=10, tuning=SEARCH)
    job = await client.create_job("acme-corp", "forecast", config)
    done = await asyncio.wait_for(client.wait(job.job_id), 240)
    assert done.status == pb.COMPLETED, done.error
    assert done.metrics["tuning_trials"] == 4 and done.metrics["tuning_best_score"] > 0
    lines = [e.message async for e in client.stream_logs(job.job_id, follow=False)]
    trials = [m for m in lines if m.startswith("tuning: trial ")]
    assert len(trials) == 4 and all("learning_rate=" in m and "num_leaves=" in m for m in trials), trials
    head = next(m for m in lines if m.startswith("tuning: 4 trials"))
    assert "by Optuna's TPE" in head and "on 3 rolling-origin fold(s)" in head and "stops after 10 rounds" in head, head
    best = next(m for m in lines if m.startswith("tuning: best trial"))
    (version,) = await client.list_models("acme-corp")
    hp = dict(version.config.hyperparameters)
    assert set(hp) == {"n_estimators", "learning_rate", "num_leaves"} and 0.03 <= hp["learning_rate"] <= 0.3 and 4 <= hp["num_leaves"] <= 31
    assert f"num_leaves': {int(hp['num_leaves'])}" in best
    # The final model trains on the whole training range for the rounds the winner's folds chose.
    assert "training on the whole training range for " in best, best
    rounds = int(best.split("whole training range for ")[1].split(" rounds")[0])
    assert hp["n_estimators"] == rounds and 1 <= rounds <= 60
    assert version.config.tuning.num_trials == 4  # the search that chose them is recorded too
    # The stored job keeps what was submitted; the version what trained.
    assert "learning_rate" not in dict(done.config.hyperparameters)


async def test_cancelling_a_search_stops_its_trials(app, client):
    from tests.conftest import cpus_free

    slow = {
        "num_trials": 6,
        "max_concurrent_trials": 1,
        "stop_bad_trials": False,
        "search_space": {"learning_rate": {"type": "loguniform", "lower": 0.001, "upper": 0.01}},
    }
    config = tiny_config(hyperparameters={"n_estimators": 20000, "num_leaves": 63}, tuning=slow)
    job = await client.create_job("acme-corp", "forecast", config)

    async def searching() -> None:
        async for line in client.stream_logs(job.job_id):
            if line.message.startswith("tuning: 6 trials"):
                return

    await asyncio.wait_for(searching(), 60)
    await asyncio.sleep(1.0)  # a trial is training now
    cancelled = await client.cancel_job(job.job_id)
    assert cancelled.status == pb.CANCELLED
    assert await cpus_free(app, timeout=30), "the search's trials still hold CPUs after the cancel"
    final = await client.get_job(job.job_id)
    assert final.status == pb.CANCELLED and final.model_version == 0


async def test_num_trials_alone_searches_the_built_in_space_within_a_time_budget(client):
    # The guide's time-constrained search: {"num_trials": N} alone is the algorithm's own space
    # (n_estimators fixed here, so left out of it), stopped by time_budget_seconds.
    # Plain random sampling is still there, and folds is the user's.
    tuning = {"num_trials": 3, "max_concurrent_trials": 2, "time_budget_seconds": 120, "sampler": "random", "folds": 2}
    job = await client.create_job("acme-corp", "forecast", tiny_config(hyperparameters={"n_estimators": 40}, tuning=tuning))
    assert set(job.config.tuning.search_space) == {"learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2"}
    done = await asyncio.wait_for(client.wait(job.job_id), 240)
    assert done.status == pb.COMPLETED, done.error
    assert 1 <= done.metrics["tuning_trials"] <= 3 and done.config.tuning.time_budget_seconds == 120
    assert done.config.tuning.sampler == "random" and done.config.tuning.folds == 2
    lines = [e.message async for e in client.stream_logs(job.job_id, follow=False)]
    head = next(m for m in lines if m.startswith("tuning: 3 trials"))
    assert "by random sampling" in head and "on 2 rolling-origin fold(s)" in head, head
