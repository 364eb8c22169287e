"""MLflow tracking through the real stack: the guide's mlflow_tracking on a job, the run read
back from the tracking store with MlflowClient (params, per-round metrics, final metrics, tags,
the model in its flavor), its id on the job and the model version."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("mlflow", reason="the mlflow extra is installed by make install; this test needs it")

import mlflow.lightgbm
from mlflow.tracking import MlflowClient

from client import AsyncTrainingClient, ConfigValidationError, pb
from server.execution import tracking
from tests.conftest import load_demo, tiny_config
from trainers import spec as specs

pytestmark = pytest.mark.asyncio(loop_scope="session")
GUIDE_TRACKING = {
    "experiment_name": "load_forecasting_2025",
    "run_name": "baseline_v1",
    "tags": {"team": "data-science", "project": "demand-forecasting"},
}


async def test_a_tracked_job_is_read_back_from_mlflow(start_app, database_url, demo_frame, tmp_path):
    await load_demo(database_url, demo_frame)
    app = await start_app()
    uri, _ = tracking.default_uri(tmp_path)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        config = tiny_config(mlflow_tracking=GUIDE_TRACKING, hyperparameters={"n_estimators": 40, "num_leaves": 7})
        job = await client.create_job("acme-corp", "forecast", config)
        done = await asyncio.wait_for(client.wait(job.job_id), 180)
        assert done.status == pb.COMPLETED, done.error
        assert done.mlflow_run_id and done.config.mlflow_tracking.experiment_name == "load_forecasting_2025"
        version = next(v for v in await client.list_models("acme-corp") if v.job_id == job.job_id)
        assert version.mlflow_run_id == done.mlflow_run_id
        logs = [e.message async for e in client.stream_logs(job.job_id, follow=False)]
    assert any(f"MLflow run {done.mlflow_run_id}" in line for line in logs)

    c = MlflowClient(uri)
    run = c.get_run(done.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "baseline_v1"
    assert c.get_experiment(run.info.experiment_id).name == "load_forecasting_2025"
    tags = run.data.tags
    assert tags["team"] == "data-science" and tags["project"] == "demand-forecasting"
    assert tags["aihub.tenant_id"] == "acme-corp" and tags["aihub.job_id"] == job.job_id and tags["aihub.attempt"] == "1"
    assert tags["aihub.model_version"] == str(done.model_version) and tags["aihub.model_id"] == version.model_id
    params = run.data.params
    assert params["algorithm"] == "lgbm" and params["hp.n_estimators"] == "40" and params["target"] == "load"
    assert params["features"] == ",".join(config["features"]) and params["training_start"].startswith("2024-03-01")
    for name in ("mae", "rmse", "mape", "r2_score", "skill"):
        assert run.data.metrics[name] == pytest.approx(done.metrics[name])
    live = [k for k in run.data.metrics if k.startswith("live_") and k.endswith("_mae")]
    assert live in (["live_fit_mae"], ["live_tune_mae"]), sorted(run.data.metrics)
    history = c.get_metric_history(run.info.run_id, live[0])
    steps = sorted(m.step for m in history)
    assert len(steps) >= 20 and steps == sorted(set(steps)), steps  # every round, once
    mlflow.set_tracking_uri(uri)
    model = mlflow.lightgbm.load_model(tags["aihub.model_uri"])  # LightGBM's own flavor
    assert model.num_trees() >= 1 and model.feature_name()[: len(config["features"])]


async def test_a_failed_tracked_job_ends_its_run_failed(start_app, database_url, demo_frame, tmp_path):
    await load_demo(database_url, demo_frame)
    app = await start_app(max_retries=0)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        config = tiny_config(mlflow_tracking={"experiment_name": "failures"}, feature_table="nope")
        failed = await asyncio.wait_for(client.wait((await client.create_job("acme-corp", "forecast", config)).job_id), 120)
    assert failed.status == pb.FAILED and failed.mlflow_run_id
    run = MlflowClient(tracking.default_uri(tmp_path)[0]).get_run(failed.mlflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["aihub.job_id"] == failed.job_id


async def test_bad_tracking_configs_are_refused(start_app, database_url, monkeypatch):
    app = await start_app(dispatch=False)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        with pytest.raises(ConfigValidationError) as err:
            await client.create_job("acme-corp", "forecast", tiny_config(mlflow_tracking={"run_name": "x", "tags": {"mlflow.user": "me"}}))
        fields = {name for name, _ in err.value.violations}
        assert {"mlflow_tracking.experiment_name", "mlflow_tracking.tags.mlflow.user"} <= fields
    # Without the extra installed, tracking is refused with a way out.
    monkeypatch.setattr(specs.model.importlib.util, "find_spec", lambda name: None)
    problems = specs.validate(tiny_config(mlflow_tracking=GUIDE_TRACKING), model_type="forecast")
    assert [p.field for p in problems] == ["mlflow_tracking"] and "aihub-training[mlflow]" in problems[0].description


async def test_tracking_is_not_part_of_the_config_hash():
    plain = specs.build(tiny_config(), model_type="forecast")
    tracked = specs.build(tiny_config(mlflow_tracking=GUIDE_TRACKING), model_type="forecast")
    assert plain.config_hash == tracked.config_hash and "mlflow_tracking" in tracked.to_dict()


PYFUNC_SCRIPT = r"""
import sys
# Only the model's own code: the editable install of this repository is hidden.
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower() and "editable" not in getattr(f, "__name__", "").lower()]
sys.path = [p for p in sys.path if p.rstrip("/") != sys.argv[4].rstrip("/")]
import mlflow
import pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(pd.read_parquet(sys.argv[3]))
import trainers
assert not trainers.__file__.startswith(sys.argv[4] + "/trainers"), trainers.__file__
print(out.to_json(orient="records", date_format="iso"))
"""


async def test_the_pyfunc_model_forecasts_what_the_service_forecasts_in_a_fresh_process(start_app, database_url, demo_frame, tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.integration.test_forecast_api import DAY_AHEAD

    await load_demo(database_url, demo_frame)
    app = await start_app()
    uri, _ = tracking.default_uri(tmp_path)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        config = {**DAY_AHEAD, "mlflow_tracking": {"experiment_name": "day_ahead"}}
        done = await asyncio.wait_for(client.wait((await client.create_job("acme-corp", "forecast", config)).job_id), 180)
        assert done.status == pb.COMPLETED, done.error
        (version,) = await client.list_models("acme-corp")
        served = await client.forecast(version.model_id, origin="2024-03-28T23:00:00")
        said = [e.message async for e in client.stream_logs(done.job_id, follow=False)]
    assert not [line for line in said if "MLflow tracking stopped" in line], said
    pyfunc_uri = MlflowClient(uri).get_run(done.mlflow_run_id).data.tags["aihub.pyfunc_uri"]
    assert pyfunc_uri.startswith(("models:/", "runs:/")), pyfunc_uri
    # History up to the origin, and the next day's weather (the target unknown there).
    frame = demo_frame[(demo_frame["timestamp"] > "2024-03-10") & (demo_frame["timestamp"] <= "2024-03-29T23:00:00Z")].copy()
    frame.loc[frame["timestamp"] > "2024-03-28T23:00:00Z", "load"] = float("nan")
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # the signature's ISO 8601 text
    frame.to_parquet(tmp_path / "input.parquet")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PYFUNC_SCRIPT, uri, pyfunc_uri, str(tmp_path / "input.parquet"), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 24 and rows[0]["origin"].startswith("2024-03-28T23:00:00")
    assert [r["forecast"] for r in rows] == pytest.approx([p.forecast for p in served.points], rel=1e-9)
