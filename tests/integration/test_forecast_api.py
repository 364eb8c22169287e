"""Forecasts from a registered version and its aliases, through the real stack: gRPC and
REST through Envoy, PostgreSQL, and the forecast actors on Ray."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import requests

from client import ConfigValidationError, DataLoadError, NotFoundError, pb
from client.errors import InvalidStateError
from tests.conftest import QUICK_START_CONFIG

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = "acme-corp"
DAY_AHEAD = {
    **QUICK_START_CONFIG,
    "hyperparameters": {"n_estimators": 30, "num_leaves": 15},
    "training_start": "2024-03-01T00:00:00",
    "training_end": "2024-03-31T23:00:00",
    "features": ["temperature", "humidity", "hour_of_day", "day_of_week", "load_lag_24", "load_lag_168", "load_roll24_mean"],
    "forecast_horizon_hours": 24,
    "known_ahead": ["temperature", "humidity"],
}


async def http(method: str, url: str, **kwargs) -> requests.Response:
    return await asyncio.to_thread(requests.request, method, url, timeout=60, **kwargs)


def stamp(value) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


async def test_forecast_by_id_and_alias_over_grpc(client, demo_frame):
    jobs = [await client.create_job(T, "forecast", DAY_AHEAD) for _ in range(2)]
    done = [await asyncio.wait_for(client.wait(j.job_id), 120) for j in jobs]
    assert all(j.status == pb.COMPLETED for j in done), [j.error for j in done]
    v2, v1 = await client.list_models(T)
    first = next(j for j in done if j.model_version == 1)

    # From an origin inside the validation window, the forecast is what the job predicted
    # there (features derived by the same code, from the same rows).
    stored = {stamp(p.timestamp): p.predicted for p in (await client.get_predictions(first.job_id, page_size=10_000)).points}
    origin = datetime(2024, 3, 28, 23, tzinfo=UTC)
    got = await client.forecast(v1.model_id, origin="2024-03-28T23:00:00")
    assert got.model_id == v1.model_id and got.model_version == 1 and stamp(got.origin) == origin and not got.alias
    assert [stamp(p.timestamp) for p in got.points] == [origin + timedelta(hours=h) for h in range(1, 25)]
    for p in got.points:
        assert p.forecast == pytest.approx(stored[stamp(p.timestamp)], rel=1e-9)
    shorter = await client.forecast(v1.model_id, origin="2024-03-28T23:00:00", horizon_hours=6)
    assert [p.forecast for p in shorter.points] == [p.forecast for p in got.points[:6]]

    # Past what it was trained for: a 400 naming the limit.
    with pytest.raises(ConfigValidationError) as err:
        await client.forecast(v1.model_id, horizon_hours=25)
    assert err.value.violations[0][0] == "horizon_hours" and "24" in err.value.violations[0][1]

    # Default origin: the last hour with the target (2024-12-31T23:00). No weather forecast
    # after it in the table: a DataLoadError naming the column and the first missing hour.
    with pytest.raises(DataLoadError) as err:
        await client.forecast(v1.model_id)
    assert "humidity" in str(err.value) and "2025-01-01T00:00:00" in str(err.value)
    hours = pd.date_range("2025-01-01T00:00:00", periods=24, freq="h", tz="UTC")
    inputs = [{"timestamp": h.isoformat(), "temperature": 1.5, "humidity": 80.0} for h in hours]
    ahead = await client.forecast(v1.model_id, inputs=inputs)
    assert stamp(ahead.origin) == datetime(2024, 12, 31, 23, tzinfo=UTC) and len(ahead.points) == 24
    assert all(50 < p.forecast < 250 for p in ahead.points)
    with pytest.raises(DataLoadError) as err:
        await client.forecast(v1.model_id, inputs=inputs[:23])
    assert "2025-01-01T23:00:00" in str(err.value)
    with pytest.raises(ConfigValidationError) as err:
        await client.forecast(v1.model_id, inputs=[{"timestamp": "soon", "temperature": 1}])
    assert err.value.violations[0][0] == "inputs[0].timestamp"

    # Aliases: made, moved (recorded, with why), resolved when a forecast runs.
    with pytest.raises(NotFoundError):
        await client.forecast(alias="production", tenant_id=T)
    made = await client.set_alias("production", v1.model_id, reason="first model")
    assert made.model_id == v1.model_id and made.model_version == 1 and made.moves[0].reason == "first model"
    by_alias = await client.forecast(alias="production", tenant_id=T, origin="2024-03-28T23:00:00")
    assert by_alias.alias == "production" and by_alias.model_id == v1.model_id
    assert [p.forecast for p in by_alias.points] == [p.forecast for p in got.points]
    moved = await client.set_alias("production", v2.model_id, reason="v2 is better")
    assert moved.model_version == 2 and [(m.from_version, m.to_version) for m in moved.moves] == [(1, 2), (0, 1)]
    assert (await client.forecast(alias="production", tenant_id=T, origin="2024-03-28T23:00:00")).model_version == 2
    assert list((await client.get_model(v2.model_id)).aliases) == ["production"]
    assert list((await client.get_model(v1.model_id)).aliases) == []

    # A version an alias points at cannot be deleted; once the alias is gone it can.
    with pytest.raises(InvalidStateError):
        await client.delete_model(v2.model_id)
    await client.set_alias("staging", v1.model_id)
    listed = await client.list_aliases(T)
    assert [(a.alias, a.model_version) for a in listed] == [("production", 2), ("staging", 1)]
    removed = await client.delete_alias("production", tenant_id=T, reason="retired")
    assert not removed.model_id and removed.moves[0].to_version == 0 and removed.moves[0].reason == "retired"
    with pytest.raises(NotFoundError):
        await client.delete_alias("production", tenant_id=T)
    assert (await client.delete_model(v2.model_id)).HasField("deleted_at")
    with pytest.raises(InvalidStateError):
        await client.set_alias("production", v2.model_id)  # a deleted version has nothing to run
    with pytest.raises(ConfigValidationError):
        await client.set_alias("Not A Slug", v1.model_id)


async def test_forecast_and_aliases_over_rest(client, rest, demo_frame):
    job = await client.create_job(T, "forecast", DAY_AHEAD)
    assert (await asyncio.wait_for(client.wait(job.job_id), 120)).status == pb.COMPLETED
    (version,) = await client.list_models(T)
    mid = version.model_id

    r = await http("PUT", f"{rest}/ai/training/models/{mid}/aliases/production", json={"reason": "go live"})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == 1 and r.json()["moves"][0]["reason"] == "go live"
    body = {"origin": "2024-03-28T23:00:00", "horizon_hours": 24}
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast", json=body)
    assert r.status_code == 200, r.text
    by_id = r.json()
    assert set(by_id) == {"model_id", "model_version", "alias", "origin", "points"}
    assert by_id["model_id"] == mid and by_id["alias"] is None and by_id["origin"] == "2024-03-28T23:00:00Z"
    assert len(by_id["points"]) == 24 and set(by_id["points"][0]) == {"timestamp", "forecast"}
    r = await http(
        "POST", f"{rest}/ai/training/models:forecast", json={"tenant_id": T, "model_type": "forecast", "alias": "production", **body}
    )
    assert r.status_code == 200, r.text
    assert r.json()["alias"] == "production" and r.json()["points"] == by_id["points"]
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast", json={**body, "history_hours": 48})
    assert r.status_code == 200 and r.json()["points"] == by_id["points"], r.text
    history = r.json()["history"]
    assert [h["timestamp"] for h in history][-1] == "2024-03-28T23:00:00Z" and len(history) == 48
    assert history[-1]["actual"] == pytest.approx(float(demo_frame.set_index("timestamp").loc["2024-03-28T23:00:00Z", "load"]))
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast?format=csv", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(r.text))
    assert list(table.columns) == ["timestamp", "series_id", "forecast", "origin"] and len(table) == 24
    assert table["forecast"].tolist() == pytest.approx([p["forecast"] for p in by_id["points"]])
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast?format=parquet", json=body)
    assert r.status_code == 200 and len(pd.read_parquet(io.BytesIO(r.content))) == 24

    # The guide-style errors.
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast", json={**body, "horizon_hours": 48})
    assert r.status_code == 400 and r.json()["error"] == "ConfigValidationError" and r.json()["details"]["field"] == "horizon_hours"
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast", json={"horizon": 24})
    assert r.status_code == 400 and r.json()["details"]["field"] == "horizon"
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast", json={})
    assert r.status_code == 400 and r.json()["error"] == "DataLoadError" and "humidity" in r.json()["message"]
    r = await http("POST", f"{rest}/ai/training/models:forecast", json={"tenant_id": T, "model_type": "forecast", "alias": "nope"})
    assert r.status_code == 404 and r.json()["error"] == "AliasNotFound"
    r = await http("POST", f"{rest}/ai/training/models/{mid}:forecast?format=xml", json=body)
    assert r.status_code == 400 and r.json()["details"]["field"] == "format"

    r = await http("PUT", f"{rest}/ai/training/models/{mid}/aliases/staging")  # no body: no reason
    assert r.status_code == 200 and r.json()["moves"][0]["reason"] == "", r.text
    r = await http("PUT", f"{rest}/ai/training/models/{mid}/aliases/Not%20A%20Slug", json={})
    assert r.status_code == 400 and r.json()["details"]["field"] == "alias", r.text
    r = await http("DELETE", f"{rest}/ai/training/aliases/staging", params={"tenant_id": T, "model_type": "FORECAST"})
    assert r.status_code == 200, r.text
    r = await http("GET", f"{rest}/ai/training/aliases", params={"tenant_id": T, "model_type": "forecast"})
    assert r.status_code == 200 and [a["alias"] for a in r.json()["aliases"]] == ["production"]
    assert (await http("GET", f"{rest}/ai/training/models/{mid}")).json()["aliases"] == ["production"]
    r = await http("DELETE", f"{rest}/ai/training/aliases/production", params={"tenant_id": T, "model_type": "forecast"})
    assert r.status_code == 200 and r.json()["model_id"] == ""
    r = await http("DELETE", f"{rest}/ai/training/aliases/production", params={"tenant_id": T, "model_type": "forecast"})
    assert r.status_code == 404 and r.json()["error"] == "AliasNotFound"


async def test_cli_alias_and_forecast(app, client, tmp_path, capsys):
    from client.cli import main as aihub

    job = await client.create_job(T, "forecast", DAY_AHEAD)
    assert (await asyncio.wait_for(client.wait(job.job_id), 120)).status == pb.COMPLETED
    (version,) = await client.list_models(T)

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = aihub(["--target", f"127.0.0.1:{app.port}", *args])
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(run, "models", "alias", "set", "production", version.model_id, "--reason", "first")
    assert code == 0 and json.loads(out)["model_version"] == 1
    code, out = await asyncio.to_thread(run, "models", "alias", "list", "--tenant", T)
    assert code == 0 and out.split()[:3] == ["production", "forecast", "v1"] and "first" in out
    weather = tmp_path / "weather.csv"
    hours = pd.date_range("2025-01-01T00:00:00", periods=24, freq="h", tz="UTC")
    pd.DataFrame({"timestamp": [h.isoformat() for h in hours], "temperature": 2.0, "humidity": 75.0}).to_csv(weather, index=False)
    args = ("forecast", "--alias", "production", "--tenant", T, "--horizon", "24", "--inputs", str(weather))
    code, out = await asyncio.to_thread(run, *args, "--output", "csv")
    assert code == 0, out
    table = pd.read_csv(io.StringIO(out))
    assert len(table) == 24 and table["timestamp"].iloc[0] == "2025-01-01T00:00:00Z"
    code, out = await asyncio.to_thread(run, *args, "--output", "json")
    assert code == 0 and json.loads(out)["alias"] == "production" and len(json.loads(out)["points"]) == 24
    code, out = await asyncio.to_thread(run, *args)
    assert code == 0 and out.startswith(f"model {version.model_id} v1 (production)")
    code, out = await asyncio.to_thread(run, "forecast", "--alias", "production", "--tenant", T, "--horizon", "48")
    assert code == 1  # a clear error naming the limit, not a traceback
    code, out = await asyncio.to_thread(run, "models", "alias", "rm", "production", "--tenant", T, "--reason", "done")
    assert code == 0 and json.loads(out)["moves"][0]["reason"] == "done"


ANOMALY = {
    **QUICK_START_CONFIG,
    "model_type": "anomaly",
    "feature_table": "load_forecasting",
    "hyperparameters": {"n_estimators": 30, "num_leaves": 15},
    "training_start": "2024-03-01T00:00:00",
    "training_end": "2024-03-31T23:00:00",
    "features": ["temperature", "humidity", "hour_of_day", "day_of_week", "load_lag_24"],
}


async def test_detect_scores_as_training_did_over_grpc_and_rest(client, rest, demo_frame):
    job = await client.create_job(T, "anomaly", ANOMALY)
    done = await asyncio.wait_for(client.wait(job.job_id), 120)
    assert done.status == pb.COMPLETED, done.error
    (version,) = await client.list_models(T)

    # The stored validation window: the same scores, threshold and flags as training kept.
    kept = await client.get_predictions(job.job_id, page_size=10_000)
    start, end = stamp(kept.points[0].timestamp), stamp(kept.points[-1].timestamp)
    got = await client._call(
        "DetectModelVersion",
        pb.DetectModelVersionRequest(model_id=version.model_id, start=start.isoformat(), end=end.isoformat()),
        lambda r: r,
    )
    assert got.threshold == pytest.approx(kept.threshold, rel=1e-12)
    assert [stamp(p.timestamp) for p in got.points] == [stamp(p.timestamp) for p in kept.points]
    assert [p.score for p in got.points] == pytest.approx([p.score for p in kept.points], rel=1e-9)
    assert [p.flagged for p in got.points] == [p.flagged for p in kept.points]

    # Rows sent inline (a day of history, then a day with a spike): the spike is flagged.
    frame = demo_frame[(demo_frame["timestamp"] >= "2024-04-01") & (demo_frame["timestamp"] < "2024-04-03")].copy()
    frame.loc[frame.index[30], "load"] *= 3
    rows = [
        {"timestamp": t.isoformat(), "load": lo, "temperature": te, "humidity": hu}
        for t, lo, te, hu in frame[["timestamp", "load", "temperature", "humidity"]].itertuples(index=False)
    ]
    r = await http("POST", f"{rest}/ai/training/models/{version.model_id}:detect", json={"rows": rows, "start": "2024-04-02T00:00:00"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model_id", "model_version", "threshold", "points"} and len(body["points"]) == 24
    assert set(body["points"][0]) == {"timestamp", "score", "flagged"}
    spike = next(p for p in body["points"] if p["timestamp"] == frame["timestamp"].iloc[30].strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert spike["flagged"] and spike["score"] >= body["threshold"]

    r = await http("POST", f"{rest}/ai/training/models/{version.model_id}:detect", json={})
    assert r.status_code == 400 and r.json()["details"]["field"] == "start"
    r = await http("POST", f"{rest}/ai/training/models/{version.model_id}:forecast", json={})
    assert r.status_code == 400 and r.json()["details"]["field"] == "model_type"


async def test_retention_passes_by_a_version_an_alias_points_at(app, client):
    await client.update_quota(T, keep_versions=1)
    for seed in (1, 2, 3):
        assert (
            await client.wait((await client.create_job(T, "forecast", {**DAY_AHEAD, "random_seed": seed})).job_id)
        ).status == pb.COMPLETED
    by_number = {v.version: v for v in await client.list_models(T)}
    await client.set_alias("production", by_number[1].model_id)
    swept = await app.retention.sweep()
    assert swept.versions == 1  # v2: neither the newest (v3) nor aliased (v1)
    left = {v.version for v in await client.list_models(T)}
    assert left == {1, 3}
    assert (await client.forecast(alias="production", tenant_id=T, origin="2024-03-28T23:00:00")).model_version == 1


async def test_a_job_on_a_local_clock_with_fahrenheit_bases_over_rest(client, rest):
    config = {**DAY_AHEAD, "features": [*DAY_AHEAD["features"], "temperature_hdh_65"], "timezone": "Europe/Berlin"}
    r = await http("POST", f"{rest}/ai/training/jobs", json={"tenant_id": T, "model_type": "forecast", "config": config})
    assert r.status_code == 400 and r.json()["details"]["field"] == "features[7]" and "°C" in r.json()["details"]["error"], r.text
    config["units"] = {"temperature": "F"}
    r = await http("POST", f"{rest}/ai/training/jobs", json={"tenant_id": T, "model_type": "forecast", "config": config})
    assert r.status_code == 200, r.text
    job = await asyncio.wait_for(client.wait(r.json()["job_id"]), 120)
    assert job.status == pb.COMPLETED, job.error
    shown = (await http("GET", f"{rest}/ai/training/jobs/{job.job_id}")).json()["config"]
    assert shown["timezone"] == "Europe/Berlin" and shown["units"] == {"temperature": "F"}
    (version,) = await client.list_models(T)
    stored = {stamp(p.timestamp): p.predicted for p in (await client.get_predictions(job.job_id, page_size=10_000)).points}
    got = await client.forecast(version.model_id, origin="2024-03-28T23:00:00")  # the same clock and bases as training
    assert [p.forecast for p in got.points] == pytest.approx([stored[stamp(p.timestamp)] for p in got.points], rel=1e-9)


async def detects_as_training_kept(client, job, version) -> None:
    """:detect over the job's validation window gives the scores and flags training kept."""
    kept = await client.get_predictions(job.job_id, page_size=10_000)
    start, end = stamp(kept.points[0].timestamp), stamp(kept.points[-1].timestamp)
    request = pb.DetectModelVersionRequest(model_id=version.model_id, start=start.isoformat(), end=end.isoformat())
    got = await client._call("DetectModelVersion", request, lambda r: r)
    assert [p.score for p in got.points] == pytest.approx([p.score for p in kept.points], rel=1e-9)
    assert [p.flagged for p in got.points] == [p.flagged for p in kept.points] and any(p.flagged for p in got.points)


@pytest.mark.parametrize(("algorithm", "hp"), [("isolation_forest", {"n_estimators": 50}), ("ecod", {})])
async def test_an_anomaly_job_on_the_value_alone_with_a_contamination_threshold_over_rest(client, rest, algorithm, hp):
    from tests.unit.test_anomaly_thresholds import signal_with_incidents

    frame = signal_with_incidents()
    await client.import_data(T, "sensor", frame.to_csv(index=False).encode())
    config = {
        "algorithm": algorithm, "hyperparameters": hp, "feature_table": "sensor", "target": "load",
        "training_start": "2024-01-01T00:00:00", "training_end": "2024-03-31T23:00:00", "features": [], "label_column": "incident",
        "threshold": {"method": "contamination", "value": 0.01},
    }  # fmt: skip
    r = await http("POST", f"{rest}/ai/training/jobs", json={"tenant_id": T, "model_type": "anomaly", "config": config})
    assert r.status_code == 200, r.text
    job = await asyncio.wait_for(client.wait(r.json()["job_id"]), 120)
    assert job.status == pb.COMPLETED, job.error
    m = (await http("GET", f"{rest}/ai/training/jobs/{job.job_id}/metrics")).json()
    assert m["windows_caught"] == m["windows_total"] >= 1 and "detection_delay_hours_median" in m and "flag_rate_ratio" in m
    shown = (await http("GET", f"{rest}/ai/training/jobs/{job.job_id}")).json()["config"]
    assert shown["threshold"] == {"method": "contamination", "value": 0.01} and shown.get("features", []) == []
    # The version detects as training scored: the same scores and flags over the validation window.
    (version,) = [v for v in await client.list_models(T) if v.algorithm == algorithm]
    await detects_as_training_kept(client, job, version)


async def test_quantile_forecasts_through_rest_and_grpc(client, rest):
    config = {**DAY_AHEAD, "quantiles": [0.1, 0.5, 0.9]}
    job = await asyncio.wait_for(client.wait((await client.create_job(T, "forecast", config)).job_id), 120)
    assert job.status == pb.COMPLETED, job.error
    assert {"pinball_loss", "pinball_loss_q10", "interval_coverage", "interval_width"} <= set(job.metrics)
    (version,) = await client.list_models(T)
    kept = await client.get_predictions(job.job_id, page_size=10_000)
    assert set(kept.points[0].quantiles) == {"0.1", "0.5", "0.9"}
    r = await http("POST", f"{rest}/ai/training/models/{version.model_id}:forecast", json={"origin": "2024-03-28T23:00:00"})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert set(points[0]["quantiles"]) == {"0.1", "0.5", "0.9"}
    assert all(p["quantiles"]["0.1"] <= p["quantiles"]["0.5"] <= p["quantiles"]["0.9"] for p in points)
    stored = {stamp(p.timestamp): p.quantiles["0.9"] for p in kept.points}
    for p in (await client.forecast(version.model_id, origin="2024-03-28T23:00:00")).points:
        assert p.quantiles["0.9"] == pytest.approx(stored[stamp(p.timestamp)], rel=1e-9)


async def test_detect_with_a_labelled_classifier_scores_as_training_did(client):
    # A 0/1 target: the version is a classifier; :detect loads it as one (its task follows from
    # the rows scored, as :evaluate's does) and gives the scores and flags training kept.
    from tests.unit.test_anomaly_thresholds import signal_with_incidents

    frame = signal_with_incidents()
    await client.import_data(T, "incidents", frame.to_csv(index=False).encode())
    config = {
        "algorithm": "rf", "hyperparameters": {"n_estimators": 30}, "feature_table": "incidents", "target": "incident",
        "training_start": "2024-01-01T00:00:00", "training_end": "2024-03-31T23:00:00", "features": ["load", "hour_of_day"],
    }  # fmt: skip
    job = await asyncio.wait_for(client.wait((await client.create_job(T, "anomaly", config)).job_id), 120)
    assert job.status == pb.COMPLETED, job.error
    (version,) = await client.list_models(T)
    await detects_as_training_kept(client, job, version)
