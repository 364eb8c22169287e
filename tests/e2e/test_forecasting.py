"""Through the real stack (REST via Envoy, gRPC server, PostgreSQL, Ray): the day-ahead
recipe of the docs, per-horizon metrics, leakage refused, live training metrics, data
checks, the new features and an operator-installed preprocessor (tests/plugins)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time

import pytest
import requests

from tests.conftest import QUICK_START_CONFIG, ROOT, slow_config
from tests.e2e.test_rest import GUIDE_BODY, error_reason, http, wait_status

pytestmark = pytest.mark.asyncio(loop_scope="session")


def readme_day_ahead() -> dict:
    """The day-ahead recipe as the docs show it."""
    section = (ROOT / "docs" / "forecasting.md").read_text().split("## Forecast horizon and day-ahead forecasting", 1)[1]
    return json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))


DAY_AHEAD = readme_day_ahead()


async def create(rest: str, config: dict) -> dict:
    resp = await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": config})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_the_day_ahead_recipe_trains_and_reports_each_horizon(rest):
    job = await create(rest, DAY_AHEAD)
    assert job["config"]["forecast_horizon_hours"] == 24 and job["config"]["horizons"] == [1, 24, 48]
    done = await wait_status(rest, job["job_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done.get("error")
    m = done["metrics"]
    for h in (1, 24, 48):
        assert {f"mae_h{h}", f"rmse_h{h}", f"mape_h{h}", f"baseline_mae_h{h}", f"skill_h{h}"} <= set(m), sorted(m)
    assert m["mae_h24"] == m["mae"] and m["mae_h1"] < m["mae_h48"]
    assert m["data_gaps"] == 0 and m["data_duplicates"] == 0 and not any(k.startswith("live_") for k in m)
    logs = (await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}/logs", params={"follow": "false"})).text
    assert "horizon 48 h: a direct model" in logs and "without load_lag_24" in logs
    version = (await http("GET", f"{rest}/ai/training/models", params={"tenant_id": "acme-corp"})).json()["versions"][-1]
    scored = await http(
        "POST",
        f"{rest}/ai/training/models/{version['model_id']}:evaluate",
        json={"evaluation_start": "2024-06-01T00:00:00", "evaluation_end": "2024-06-14T23:00:00"},
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["metrics"]["evaluation_rows"] == 14 * 24  # rolling windows and lags read the hours before


async def test_leakage_is_refused_at_create_naming_the_feature(rest):
    config = {**DAY_AHEAD, "features": ["temperature", "load_lag_1", "humidity"]}
    resp = await http("POST", f"{rest}/ai/training/jobs", json={**GUIDE_BODY, "config": config})
    err = resp.json()
    assert resp.status_code == 400 and error_reason(err) == "ConfigValidationError"
    found = {v["field"]: v["error"] for v in err["details"]["violations"]}
    assert "load_lag_1 is 1 h before the target hour, after the forecast origin 24 h before it" in found["features[1]"]
    assert "humidity reads humidity, which is not in known_ahead" in found["features[2]"]
    unknown = await http("POST", f"{rest}/ai/training/validate", json={"config": {**DAY_AHEAD, "preprocessor": "nope"}})
    assert unknown.json()["valid"] is False and "load_times_temperature" in unknown.text  # lists what is installed


# The guide's "Check Job Status" lines, verbatim (status = the GET answer).
GUIDE_STATUS_SNIPPET = """
print(f"Status: {status['status']}")
print(f"Progress: {status['progress']}%")
print(f"Current Step: {status['current_step']}")

# Check for metrics
if status['metrics']:
    print(f"MAE: {status['metrics']['mae']:.2f}")
    print(f"RMSE: {status['metrics']['rmse']:.2f}")
"""


def guide_prints(status: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(GUIDE_STATUS_SNIPPET, {"status": status})  # noqa: S102 - the guide's own lines
    return out.getvalue()


async def test_live_metrics_while_training_then_replaced(rest):
    job = await create(rest, slow_config(early_stopping_rounds=20000))
    deadline, seen, printed = time.monotonic() + 120, [], []
    while time.monotonic() < deadline and len(seen) < 3:
        now = (await http("GET", f"{rest}/ai/training/jobs/{job['job_id']}")).json()
        printed.append(guide_prints(now))  # at every moment, the guide's lines run as written
        if now["current_step"] == "training" and "live_round" in now["metrics"]:
            m = now["metrics"]
            assert m["mae"] == m["live_tune_mae"] and m["rmse"] == m["live_tune_rmse"]
            seen.append((now["progress"], m["live_round"], m["mae"]))
        await asyncio.sleep(1.1)
    assert len(seen) == 3, seen
    assert [r for _, r, _ in seen] == sorted(r for _, r, _ in seen) and seen[-1][1] > seen[0][1]  # rounds move on
    assert all(20 <= p < 80 for p, _, _ in seen) and all(mae > 0 for _, _, mae in seen)
    assert "Current Step: training" in printed[-1] and "MAE: " in printed[-1] and "RMSE: " in printed[-1]
    assert "data_gaps" not in now["metrics"] and "r2_score" not in now["metrics"]  # only live ones before evaluation

    def watch_until_live() -> dict:
        with requests.get(f"{rest}/ai/training/jobs/{job['job_id']}/watch", stream=True, timeout=60) as r:
            for line in r.iter_lines():
                snapshot = json.loads(line) if line else {}
                if "live_round" in snapshot.get("metrics", {}):
                    return snapshot
        return {}

    watched = await asyncio.to_thread(watch_until_live)
    assert watched["current_step"] == "training" and watched["metrics"]["live_tune_mae"] > 0
    await http("DELETE", f"{rest}/ai/training/jobs/{job['job_id']}")
    quick = await create(rest, {**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 30}})
    done = await wait_status(rest, quick["job_id"], {"COMPLETED"})
    assert "r2_score" in done["metrics"] and not [k for k in done["metrics"] if k.startswith("live_")]
    assert done["metrics"]["data_gaps"] == 0 and done["metrics"]["mae"] > 0


async def test_a_failing_data_check_fails_the_job_naming_it(rest):
    csv = "timestamp,load,temperature\n" + "".join(
        f"2024-01-{d:02d}T{h:02d}:00:00,{100 + h},{5 + h % 7}\n" for d in range(1, 15) for h in range(24) if not (d == 3 and h < 12)
    )
    resp = await http(
        "POST",
        f"{rest}/ai/training/features/gappy",
        params={"tenant_id": "acme-corp"},
        data=csv,
        headers={"Content-Type": "text/csv"},
    )
    assert resp.status_code == 200, resp.text
    config = {
        **QUICK_START_CONFIG,
        "feature_table": "gappy",
        "training_start": "2024-01-01T00:00:00",
        "training_end": "2024-01-14T23:00:00",
        "features": ["temperature", "hour_of_day", "load_lag_24"],
        "data_checks": {"max_gap_ratio": 0.01},
    }
    failed = await wait_status(rest, (await create(rest, config))["job_id"], {"FAILED", "COMPLETED"})
    assert failed["status"] == "FAILED" and failed["error"]["error"] == "DataLoadError"
    assert failed["error"]["details"]["check"] == "gaps" and "12 missing hours" in failed["error"]["message"]
    assert failed.get("next_retry_at") is None  # not retried: the data is what it is
    warned = await wait_status(rest, (await create(rest, {**config, "data_checks": {"max_gap_ratio": 0.5}}))["job_id"], {"COMPLETED"})
    assert warned["metrics"]["data_gaps"] == 12
    logs = (await http("GET", f"{rest}/ai/training/jobs/{warned['job_id']}/logs", params={"follow": "false"})).text
    assert '"level":"WARNING"' in logs.replace(" ", "") and "data check gaps: 12 missing hours" in logs


async def test_an_installed_preprocessor_end_to_end(rest):
    config = {**DAY_AHEAD, "preprocessor": "load_times_temperature", "features": [*DAY_AHEAD["features"], "load_times_temperature"]}
    job = await create(rest, config)
    done = await wait_status(rest, job["job_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done.get("error")
    version = (await http("GET", f"{rest}/ai/training/models", params={"tenant_id": "acme-corp"})).json()["versions"][-1]
    assert version["job_id"] == job["job_id"] and "load_times_temperature" in version["feature_importance"]
    broken = await create(rest, {**DAY_AHEAD, "horizons": [], "preprocessor": "always_fails", "features": ["temperature", "never_made"]})
    failed = await wait_status(rest, broken["job_id"], {"FAILED", "COMPLETED"})
    assert failed["status"] == "FAILED" and failed["error"]["error"] == "PreprocessorError"
    assert "'always_fails' failed: RuntimeError: this preprocessor always fails" in failed["error"]["message"]
    assert failed.get("next_retry_at") is None
