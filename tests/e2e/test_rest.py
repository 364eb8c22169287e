"""The guide's REST API through a real Envoy (gRPC-JSON transcoding) in front of the real server."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from datetime import datetime

import pandas as pd
import pytest
import requests

from tests.conftest import QUICK_START_CONFIG, ROOT, slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

GUIDE_BODY = {
    "tenant_id": "acme-corp",
    "model_type": "forecast",
    "config": QUICK_START_CONFIG,
    "priority": "high",
    "metadata": {"description": "Baseline load forecasting model", "owner": "data-science-team"},
}


async def http(method: str, url: str, **kwargs) -> requests.Response:
    return await asyncio.to_thread(requests.request, method, url, timeout=60, **kwargs)


async def wait_status(rest: str, job_id: str, wanted: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = (await http("GET", f"{rest}/ai/training/jobs/{job_id}")).json()
        if job["status"] in wanted or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.2)


async def lines_of(url: str, **params) -> list[dict]:
    """A streamed response read to its end, one JSON object per line (in a thread: the
    server shares this event loop)."""

    def read() -> list[dict]:
        with requests.get(url, params=params, stream=True, timeout=60) as r:
            assert r.status_code == 200, r.text
            return [json.loads(line) for line in r.iter_lines() if line]

    return await asyncio.to_thread(read)


def error_reason(body: dict) -> str:
    """The guide's error name, after checking the body has the guide's shape."""
    assert {"error", "message", "details"} <= set(body) and isinstance(body["details"], dict), body
    return body["error"]


async def test_guide_quick_start_status_metrics_list_logs(rest):
    resp = await http("POST", f"{rest}/ai/training/jobs", json=GUIDE_BODY)
    assert resp.status_code == 200, resp.text
    job = resp.json()
    uuid.UUID(job["job_id"])
    assert job["status"] == "PENDING" and job["progress"] == 0 and job["current_step"] == ""
    assert job["priority"] == "HIGH" and job["metadata"]["owner"] == "data-science-team"
    datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
    assert job["config"]["random_seed"] == 42 and job["config"]["validation_split"] == 0.2
    # Whole numbers are printed as the guide writes them, in the create answer as in GET's.
    assert type(job["config"]["hyperparameters"]["max_depth"]) is int and type(job["config"]["hyperparameters"]["n_estimators"]) is int
    got = (await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}")).json()
    assert got["config"]["hyperparameters"] == job["config"]["hyperparameters"] == QUICK_START_CONFIG["hyperparameters"]

    done = await wait_status(rest, job["job_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and done["progress"] == 100
    assert isinstance(done["metrics"]["mae"], float) and done["metrics"]["mae"] <= done["metrics"]["rmse"]

    metrics = (await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}/metrics")).json()
    assert {"mae", "rmse", "mape", "r2_score", "training_duration_seconds", "training_data_size"} <= set(metrics)
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # a flat object of numbers
    assert metrics["training_data_size"] == 8760 and metrics["r2_score"] > 0.8
    assert type(metrics["training_data_size"]) is int and type(metrics["data_rows"]) is int  # counts, not 8760.0

    listing = (await http("GET", f"{rest}/ai/training/jobs", params={"tenant_id": "acme-corp", "status": "COMPLETED"})).json()
    assert [j["job_id"] for j in listing["jobs"]] == [job["job_id"]]
    assert (await http("GET", f"{rest}/ai/training/jobs", params={"status": "completed"})).json()["jobs"][0]["status"] == "COMPLETED"

    lines = await lines_of(f"{rest}/ai/training/jobs/{job['job_id']}/logs")
    assert [e["sequence"] for e in lines] == list(range(1, len(lines) + 1))
    assert {"data_loading", "preprocessing", "training", "evaluation", "registration"} <= {e["step"] for e in lines}
    assert lines[-1]["message"].startswith("job completed")


async def test_logs_of_a_running_job_arrive_line_by_line(rest):
    job = (await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": slow_config()})).json()

    def read_until_training() -> list[tuple[float, dict]]:
        got, start = [], time.monotonic()
        with requests.get(f"{rest}/ai/training/jobs/{job['job_id']}/logs", stream=True, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    got.append((time.monotonic() - start, json.loads(line)))
                    if got[-1][1]["step"] == "training":
                        return got
        return got

    got = await asyncio.to_thread(read_until_training)
    status = (await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}")).json()["status"]
    assert status == "RUNNING"  # the lines came while the job ran, before its end
    assert got[-1][1]["step"] == "training"
    cancel = await http("DELETE", f"{rest}/ai/training/jobs/{job['job_id']}")
    assert cancel.status_code == 200 and cancel.json()["status"] == "CANCELLED"
    # The stream of a cancelled job ends by itself with the cancel line.
    rest_lines = await lines_of(f"{rest}/ai/training/jobs/{job['job_id']}/logs", after_sequence=got[-1][1]["sequence"])
    assert rest_lines[-1]["message"] == "job cancelled"


async def test_watch_streams_job_snapshots(rest):
    job = (await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": tiny_config()})).json()
    snaps = await lines_of(f"{rest}/ai/training/jobs/{job['job_id']}/watch")
    assert snaps[-1]["status"] == "COMPLETED" and snaps[-1]["progress"] == 100
    assert [s["progress"] for s in snaps] == sorted(s["progress"] for s in snaps)


@pytest.mark.parametrize(
    ("mutate", "status", "reason", "words"),
    [
        (
            lambda b: b["config"].update(validation_split=1.5),
            400,
            "ConfigValidationError",
            ["validation_split", "Must be between 0.0 and 1.0"],
        ),
        (
            lambda b: b["config"].update(validaton_split=b["config"].pop("validation_split")),
            400,
            "ConfigValidationError",
            ["config.validaton_split"],
        ),
        (lambda b: b.update(prority="high"), 400, "ConfigValidationError", ["prority"]),
        (
            lambda b: b["config"]["hyperparameters"].update(learning_rate=-1),
            400,
            "ConfigValidationError",
            ["hyperparameters.learning_rate"],
        ),
        (
            lambda b: b.update(priority="urgent"),
            400,
            "ConfigValidationError",
            ["priority", "'urgent' is not one of critical, high, normal, low"],
        ),
        (lambda b: b.update(tenant_id=""), 400, "InvalidRequest", ["tenant_id"]),
    ],
)
async def test_bad_create_bodies_are_400_naming_the_field(rest, mutate, status, reason, words):
    body = json.loads(json.dumps(GUIDE_BODY))
    mutate(body)
    resp = await http("POST", f"{rest}/ai/training/jobs", json=body)
    assert resp.status_code == status, resp.text
    err = resp.json()
    assert error_reason(err) == reason
    assert all(w in resp.text for w in words), resp.text
    assert "grpc-status" not in resp.headers and "grpc-message" not in resp.headers
    assert (await http("GET", f"{rest}/ai/training/jobs")).json()["jobs"] == []


async def test_not_found_conflicts_and_unmapped(rest):
    missing = await http("GET", f"{rest}/ai/training/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404 and error_reason(missing.json()) == "JobNotFound"
    assert (await http("GET", f"{rest}/ai/training/jobs/not-a-uuid")).status_code == 400
    assert (await http("GET", f"{rest}/ai/training/nothing-here")).status_code == 404
    assert (await http("PUT", f"{rest}/ai/training/jobs")).status_code == 404
    bad_query = await http("GET", f"{rest}/ai/training/jobs", params={"tennant_id": "acme-corp"})
    assert bad_query.status_code == 400
    job = (await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": tiny_config()})).json()
    await wait_status(rest, job["job_id"], {"COMPLETED"})
    again = await http("POST", f"{rest}/ai/training/jobs/{job['job_id']}/retry")
    assert again.status_code == 400 and error_reason(again.json()) == "InvalidStateTransition"
    patch = await http("PATCH", f"{rest}/ai/training/jobs/{job['job_id']}", data='{"priority": "low"}')
    assert patch.status_code == 400 and "PENDING" in patch.text


async def test_data_load_error_retry_and_cancel(rest):
    body = {**GUIDE_BODY, "config": tiny_config(training_start="1990-01-01T00:00:00", training_end="1990-12-31T23:59:59")}
    job = (await http("POST", f"{rest}/ai/training/jobs", json=body)).json()
    failed = await wait_status(rest, job["job_id"], {"FAILED", "COMPLETED"})
    assert failed["status"] == "FAILED" and failed["error"]["reason"] == "DataLoadError"
    assert "features.load_forecasting" in failed["error"]["message"]
    retried = await http("POST", f"{rest}/ai/training/jobs/{job['job_id']}/retry")
    assert retried.status_code == 200 and retried.json()["attempt"] == 2
    refailed = await wait_status(rest, job["job_id"], {"FAILED"})
    assert refailed["attempt"] == 2


async def test_patch_priority_as_the_guide_sends_it(rest, app):
    app.dispatcher.pause()
    job = (await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "priority": "low", "config": tiny_config()})).json()
    # The guide's curl: -X PATCH -d '{"priority": "high"}' (curl's default form content type).
    resp = await http(
        "PATCH",
        f"{rest}/ai/training/jobs/{job['job_id']}",
        data='{"priority": "critical"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200 and resp.json()["priority"] == "CRITICAL"
    unknown = await http("PATCH", f"{rest}/ai/training/jobs/{job['job_id']}", json={"priority": "low", "status": "RUNNING"})
    assert unknown.status_code == 400 and "status" in unknown.text


async def test_validate_health_clusters(rest):
    good = await http("POST", f"{rest}/ai/training/validate", data=json.dumps({"config": QUICK_START_CONFIG}))
    assert good.status_code == 200 and good.json() == {"valid": True, "violations": []}
    bad = await http("POST", f"{rest}/ai/training/validate", json={"config": {**QUICK_START_CONFIG, "validation_split": 1.5}})
    assert bad.status_code == 200 and bad.json()["valid"] is False
    assert bad.json()["violations"] == [{"field": "validation_split", "description": "Must be between 0.0 and 1.0"}]
    health = (await http("GET", f"{rest}/health")).json()
    assert health["status"] == "ok" and health["queue"]["PENDING"] == 0
    clusters = (await http("GET", f"{rest}/ai/training/ray/clusters")).json()
    assert isinstance(clusters, list) and clusters[0]["cluster_id"] == "local"
    assert clusters[0]["status"] == "RUNNING" and clusters[0]["num_workers"] == 1


async def test_list_pagination(rest, app):
    app.dispatcher.pause()
    ids = [
        (await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": tiny_config()})).json()["job_id"] for _ in range(5)
    ]
    seen, token = [], ""
    while True:
        page = (
            await http("GET", f"{rest}/ai/training/jobs", params={"tenant_id": "acme-corp", "page_size": 2, "page_token": token})
        ).json()
        seen += [j["job_id"] for j in page["jobs"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == ids[::-1]


async def test_import_csv_and_parquet_over_rest(rest):
    frame = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC"), "load": range(100), "temperature": 5.0}
    )
    url = f"{rest}/ai/training/features/load_forecasting"
    resp = await http("POST", url, params={"tenant_id": "initech"}, data=frame.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "rows_imported": 100,
        "table": "load_forecasting",
        "columns": ["load", "temperature"],
        "duplicates_merged": 0,
        "duplicates": "refuse",
    }
    buf = io.BytesIO()
    frame.to_parquet(buf)
    resp = await http(
        "POST", url, params={"tenant_id": "initech"}, data=buf.getvalue(), headers={"Content-Type": "application/octet-stream"}
    )
    assert resp.status_code == 200 and resp.json()["rows_imported"] == 100
    bad = await http("POST", url, params={"tenant_id": "initech"}, data="a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert bad.status_code == 400 and "timestamp" in bad.text


async def test_a_feature_file_larger_than_every_body_limit_streams_over_rest(rest):
    """The feature route is not buffered: a file past Envoy's 1 MiB body limit and the
    transcoder's 2 MiB message limit arrives as many ImportFeatureDataHttp messages, chunked
    or with a length, and every row lands."""
    hours = 160_000
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2000-01-01", periods=hours, freq="h", tz="UTC"),
            "load": (pd.RangeIndex(hours) % 977) * 1.25,
            "temperature": (pd.RangeIndex(hours) % 37) - 5.5,
        }
    )
    body = frame.to_csv(index=False).encode()
    assert len(body) > 5 * 1024**2

    def pieces():
        for at in range(0, len(body), 64 * 1024):
            yield body[at : at + 64 * 1024]

    url = f"{rest}/ai/training/features"
    for table, data in (("streamed_chunked", pieces()), ("streamed_whole", body)):
        resp = await http("POST", f"{url}/{table}", params={"tenant_id": "initech"}, data=data, headers={"Content-Type": "text/csv"})
        assert resp.status_code == 200, resp.text[:500]
        assert resp.json()["rows_imported"] == hours and resp.json()["columns"] == ["load", "temperature"]


async def test_model_registry_over_rest(rest):
    job = (await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": tiny_config()})).json()
    await wait_status(rest, job["job_id"], {"COMPLETED"})
    listing = (await http("GET", f"{rest}/ai/training/models", params={"tenant_id": "acme-corp"})).json()
    (version,) = listing["versions"]
    assert version["version"] == 1 and version["job_id"] == job["job_id"] and version["model_type"] == "FORECAST"
    one = (await http("GET", f"{rest}/ai/training/models/{version['model_id']}")).json()
    assert one["artifact_uri"].endswith("model.txt") and one["metrics"]["mae"] > 0
    scored = await http(
        "POST",
        f"{rest}/ai/training/models/{version['model_id']}:evaluate",
        json={"evaluation_start": "2024-04-01T00:00:00", "evaluation_end": "2024-04-30T23:00:00"},
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["metrics"]["evaluation_rows"] == 30 * 24
    typo = await http(
        "POST",
        f"{rest}/ai/training/models/{version['model_id']}:evaluate",
        json={"evaluation_start": "2024-04-01T00:00:00", "evaluation_ends": "2024-04-30T23:00:00"},
    )
    assert typo.status_code == 400 and "evaluation_ends" in typo.text
    empty = await http(
        "POST",
        f"{rest}/ai/training/models/{version['model_id']}:evaluate",
        json={"evaluation_start": "1990-04-01T00:00:00", "evaluation_end": "1990-04-30T23:00:00"},
    )
    assert empty.status_code == 400 and error_reason(empty.json()) == "DataLoadError", empty.text
    assert empty.json()["details"]["reason"].startswith("No rows in features.load_forecasting")
    assert empty.json()["details"]["tenant_id"] == "acme-corp"
    kept = await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}/predictions", params={"max_points": 50})
    assert kept.status_code == 200, kept.text
    shown = kept.json()
    assert shown["downsampled"] is True and 25 <= len(shown["points"]) <= 50 and shown["model_id"] == version["model_id"]
    assert shown["total_points"] == one["metrics"]["validation_rows"] and shown["model_type"] == "FORECAST"
    first = shown["points"][0]
    assert set(first) >= {"timestamp", "actual", "predicted", "baseline"} and first["timestamp"].endswith("Z")
    typo = await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}/predictions", params={"max_point": 50})
    assert typo.status_code == 400  # a misspelled query parameter
    gone = await http("DELETE", f"{rest}/ai/training/models/{version['model_id']}")
    assert gone.status_code == 200 and gone.json()["deleted_at"]
    after = await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}/predictions")
    assert after.status_code == 400 and after.json()["error"] == "InvalidState", after.text
    assert "went with its artifact" in after.json()["message"]
    assert (await http("GET", f"{rest}/ai/training/models", params={"tenant_id": "acme-corp"})).json()["versions"] == []
    assert (await http("GET", f"{rest}/ai/training/models/{uuid.uuid4()}")).status_code == 404


async def test_every_error_kind_has_the_guides_body(rest):
    """{"error", "message", "details"} with the guide's keys, for the server's errors and
    Envoy's own; HTTP statuses as before; no grpc-* headers and no trailer header leak."""
    bad = json.loads(json.dumps(GUIDE_BODY))
    bad["config"].update(validation_split=1.5, algorithm="lgbm", target="")
    resp = await http("POST", f"{rest}/ai/training/jobs", json=bad)
    err = resp.json()
    assert resp.status_code == 400 and error_reason(err) == "ConfigValidationError", resp.text
    assert err["message"].startswith("Invalid training configuration")
    assert err["details"]["field"] == "target" or err["details"]["field"] == "validation_split"
    fields = {v["field"]: v["error"] for v in err["details"]["violations"]}
    assert fields["validation_split"] == "Must be between 0.0 and 1.0" and "target" in fields
    assert (err["details"]["field"], err["details"]["error"]) == next(iter(fields.items()))

    too_big = {**GUIDE_BODY, "config": tiny_config(distributed=True, ray_config={"num_workers": 8, "cpus_per_worker": 1})}
    resp = await http("POST", f"{rest}/ai/training/jobs", json=too_big)
    err = resp.json()
    assert resp.status_code == 429 and error_reason(err) == "ResourceError", resp.text
    assert err["details"]["requested_workers"] == 8 and isinstance(err["details"]["available_workers"], int)
    assert err["message"].startswith("Insufficient resources for distributed training")

    missing_id = str(uuid.uuid4())
    resp = await http("GET", f"{rest}/ai/training/jobs/{missing_id}")
    assert resp.status_code == 404 and error_reason(resp.json()) == "JobNotFound"
    assert resp.json()["details"] == {"job_id": missing_id}

    for resp, status, name in (
        (await http("GET", f"{rest}/ai/training/nothing-here"), 404, "NotFound"),
        (await http("GET", f"{rest}/ai/training/jobs", params={"tennant_id": "acme-corp"}), 400, "InvalidRequest"),
        (await http("POST", f"{rest}/ai/training/jobs", data="x" * (2 << 20)), 413, "PayloadTooLarge"),
    ):
        assert resp.status_code == status and error_reason(resp.json()) == name, resp.text
        assert resp.headers["content-type"] == "application/json" and resp.json()["details"]["http_status"] == status

    for resp in (await http("GET", f"{rest}/ai/training/jobs/{missing_id}"), await http("POST", f"{rest}/ai/training/jobs", json=bad)):
        assert not {"grpc-status", "grpc-message", "x-aihub-error", "grpc-status-details-bin"} & set(resp.headers), resp.headers
        assert int(resp.headers["content-length"]) == len(resp.content)

    body = {**GUIDE_BODY, "config": tiny_config(feature_table="no_such_table")}
    job = (await http("POST", f"{rest}/ai/training/jobs", json=body)).json()
    failed = await wait_status(rest, job["job_id"], {"FAILED", "COMPLETED"})
    assert failed["status"] == "FAILED" and failed["error"]["error"] == "DataLoadError"
    assert failed["error"]["message"] == "Failed to load training data: Table not found: features.no_such_table"
    assert failed["error"]["details"] == {
        "reason": "Table not found: features.no_such_table",
        "tenant_id": "acme-corp",
        "table": "features.no_such_table",
    }


async def test_the_guides_scheduled_training_over_rest(rest):
    """The guide's "Scheduled Training" body, verbatim but for the config, makes a schedule;
    the schedule resource answers on /ai/training/schedules."""
    body = {"tenant_id": "acme-corp", "model_type": "forecast", "schedule": "0 2 * * 0", "config": tiny_config()}
    resp = await http("POST", f"{rest}/ai/training/jobs", json=body)
    assert resp.status_code == 200, resp.text
    made = resp.json()
    assert made["schedule"] == "0 2 * * 0" and made["timezone"] == "UTC" and made["priority"] == "HIGH" and not made["paused"]
    fires = datetime.fromisoformat(made["next_fire_at"].replace("Z", "+00:00"))
    assert fires.weekday() == 6 and (fires.hour, fires.minute) == (2, 0)
    sid = made["schedule_id"]

    listed = (await http("GET", f"{rest}/ai/training/schedules", params={"tenant_id": "acme-corp"})).json()
    assert sid in [s["schedule_id"] for s in listed["schedules"]]
    ran = (await http("POST", f"{rest}/ai/training/schedules/{sid}:run")).json()
    assert ran["job"]["schedule_id"] == sid and ran["job"]["priority"] == "HIGH"
    done = await wait_status(rest, ran["job"]["job_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED"
    jobs = (await http("GET", f"{rest}/ai/training/jobs", params={"schedule_id": sid})).json()["jobs"]
    assert [j["job_id"] for j in jobs] == [ran["job"]["job_id"]]
    shown = (await http("GET", f"{rest}/ai/training/schedules/{sid}")).json()
    assert shown["recent_jobs"][0]["status"] == "COMPLETED"
    assert (await http("POST", f"{rest}/ai/training/schedules/{sid}:pause")).json()["paused"] is True
    assert (await http("POST", f"{rest}/ai/training/schedules/{sid}:resume")).json()["paused"] is False

    # A version marked keep is protected from retention.
    model_id = (await http("GET", f"{rest}/ai/training/models", params={"tenant_id": "acme-corp"})).json()["versions"][0]["model_id"]
    kept = await http("PATCH", f"{rest}/ai/training/models/{model_id}", json={"keep": True})
    assert kept.status_code == 200 and kept.json()["keep"] is True, kept.text

    gone = await http("DELETE", f"{rest}/ai/training/schedules/{sid}")
    assert gone.status_code == 200
    missing = await http("GET", f"{rest}/ai/training/schedules/{sid}")
    assert missing.status_code == 404 and error_reason(missing.json()) == "ScheduleNotFound"
    assert missing.json()["details"]["schedule_id"] == sid


WEEKLY = {"schedule": "0 2 * * 0", "tenant_id": "acme-corp", "model_type": "forecast"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/ai/training/jobs", {"schedule": "at two", "tenant_id": "acme-corp", "model_type": "forecast"}, "schedule"),
        ("/ai/training/schedules", {**WEEKLY, "cron_tz": "x"}, "cron_tz"),
        ("/ai/training/schedules", {**WEEKLY, "timezone": "Nowhere/City"}, "timezone"),
        ("/ai/training/alerts/targets", {"tenant_id": "acme-corp", "url": "http://127.0.0.1:5432/"}, "url"),
        ("/ai/training/alerts/targets", {"tenant_id": "acme-corp", "url": "http://[::1/"}, "url"),  # a 500 before
        ("/ai/training/alerts/targets", {"tenant_id": "acme-corp", "url": "http://100.64.0.1/"}, "url"),  # CGNAT
    ],
)
async def test_bad_schedule_and_alert_bodies_are_400_naming_the_field(rest, path, body, field):
    if "config" not in body and path != "/ai/training/alerts/targets":
        body = {**body, "config": tiny_config()}
    resp = await http("POST", f"{rest}{path}", json=body)
    assert resp.status_code == 400, resp.text
    got = resp.json()
    assert error_reason(got) in ("ConfigValidationError", "InvalidRequest")
    assert field in json.dumps(got["details"]), got


async def test_the_docs_schedule_example_works_as_written(rest):
    from tests.conftest import ROOT

    section = (ROOT / "docs" / "operations.md").read_text().split("### Scheduled retraining", 1)[1]
    body = json.loads(section.split("-d '", 1)[1].split("'", 1)[0])
    resp = await http("POST", f"{rest}/ai/training/jobs", data=json.dumps(body))  # as curl sends it (form content type)
    assert resp.status_code == 200, resp.text
    made = resp.json()
    assert made["window"] == "P365D" and made["timezone"] == "Europe/Berlin" and made["priority"] == "HIGH"
    fires = datetime.fromisoformat(made["next_fire_at"].replace("Z", "+00:00"))
    assert fires.weekday() == 6 and fires.hour in (0, 1)  # 02:00 in Berlin: 01:00Z in winter, 00:00Z in summer


async def test_the_web_page_is_served_by_envoy(rest):
    """web/ at the REST port: Envoy's own answers, with their content types and a strict
    CSP; the API beside it unchanged."""
    page = await http("GET", f"{rest}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"] and page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/ui/app.js">' in page.text
    for path, kind in (("/ui/app.js", "text/javascript"), ("/ui/plot.js", "text/javascript"), ("/ui/app.css", "text/css")):
        got = await http("GET", f"{rest}{path}")
        name = path.rsplit("/", 1)[1]
        assert got.status_code == 200 and got.headers["content-type"].startswith(kind), path
        assert got.content == (ROOT / "web" / name).read_bytes()  # the bytes as they are, not the JSON error body
    missing = await http("GET", f"{rest}/ui/nope.js")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert (await http("POST", f"{rest}/")).status_code == 404  # the page is GET only
    assert (await http("GET", f"{rest}/health")).json()["status"] in ("ok", "degraded")


async def test_the_openapi_description_and_its_page_are_served_by_envoy(rest):
    """/openapi.json (generated from the protos) and Swagger UI at /docs, Envoy's own answers
    under the same strict CSP; every path it describes answers through Envoy (not Envoy's 404)."""
    spec_resp = await http("GET", f"{rest}/openapi.json")
    assert spec_resp.status_code == 200 and spec_resp.headers["content-type"].startswith("application/json")
    assert spec_resp.content == (ROOT / "client" / "_gen" / "openapi.json").read_bytes()
    spec = spec_resp.json()
    assert spec["openapi"] == "3.1.0" and "/ai/training/jobs" in spec["paths"]
    page = await http("GET", f"{rest}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/docs/swagger-ui-bundle.js">' in page.text and "//" not in page.text.split("<body>")[1].replace("/docs/", "")
    for path, kind in (
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/init.js", "text/javascript"),
    ):
        got = await http("GET", f"{rest}{path}")
        assert got.status_code == 200 and got.headers["content-type"].startswith(kind), path
    # Each documented route reaches the server (a made-up id answers the service's own error, not Envoy's NotFound).
    for path, methods in spec["paths"].items():
        for method in methods:
            if method == "get" and path.endswith(("/logs", "/watch")):
                continue  # streams: their errors are covered by the stream tests
            url = rest + path.replace("{job_id}", str(uuid.uuid4())).replace("{model_id}", str(uuid.uuid4()))
            url = url.replace("{schedule_id}", str(uuid.uuid4())).replace("{target_id}", str(uuid.uuid4())).replace("{table}", "t")
            resp = await http(method.upper(), url, data=b"{}" if "requestBody" in methods[method] else None)
            body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
            assert not (resp.status_code == 404 and body.get("error") == "NotFound"), (method, path, resp.text[:200])
