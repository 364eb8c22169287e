"""The web page in a real browser: headless Chromium (Debian's package, driven by Playwright)
against `python -m server --seed-demo` with authentication on, through Envoy on the REST
port. The key is entered once in the page and kept for the tab; a job created from the page
moves live to 100 % and its plots draw every kept prediction; a failed job shows its error; a
job is cancelled from the page; an anomaly job's flags are drawn; two model versions are
compared. Screenshots of the job page and the models page are written to
AIHUB_SCREENSHOT_DIR (default build/screenshots/)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

from client import TrainingClient
from server import demo_data
from tests.conftest import QUICK_START_CONFIG, ROOT, free_port, server_process, slow_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ADMIN_KEY = "web-admin-" + "k" * 40
TENANT = "acme-corp"
SHOTS = Path(os.environ.get("AIHUB_SCREENSHOT_DIR") or ROOT / "build" / "screenshots")
# As the machine's own check starts it: no background connections (the network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed: `make browser` (scripts/install_browser.sh, as root) installs Debian's"
    ),
]


@dataclass
class Web:
    url: str
    grpc: str
    key: str

    def rest(self, method: str, path: str, body: dict | None = None) -> dict:
        resp = requests.request(method, self.url + path, json=body, headers={"authorization": f"Bearer {self.key}"}, timeout=30)
        assert resp.ok, resp.text
        return resp.json()

    def create(self, config: dict, model_type: str = "forecast") -> str:
        return self.rest("POST", "/ai/training/jobs", {"tenant_id": TENANT, "model_type": model_type, "config": config})["job_id"]

    def wait(self, job_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.rest("GET", f"/ai/training/jobs/{job_id}")
            if job["status"] in ("COMPLETED", "FAILED", "CANCELLED") and not job.get("next_retry_at"):
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[Web]:
    tmp = tmp_path_factory.mktemp("web")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(tmp),
        "AIHUB_GRPC_PORT": str(grpc_port),
        "AIHUB_HTTP_PORT": str(http_port),
        "AIHUB_METRICS_PORT": str(metrics_port),
        "AIHUB_AUTH": "required",
        "AIHUB_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "RAY_ADDRESS", "AIHUB_ISOLATED", "AIHUB_LOCAL_RAY_NODES"):
        env.pop(name, None)
    with server_process(tmp, env):
        with TrainingClient(f"127.0.0.1:{grpc_port}", api_key=ADMIN_KEY) as admin:
            key = admin.create_key(TENANT, name="web page").key
        yield Web(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", key)


@pytest.fixture(scope="module")
def browser(web):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, web):
    """One tab for the module: the key entered once stays in its session."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(30_000)
    yield tab
    context.close()
    assert not errors, errors  # no script error on any page


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_the_page_asks_for_the_key_once_and_keeps_it(page, web):
    page.goto(web.url + "/")
    page.wait_for_selector("#error:not([hidden])")
    assert "needs an API key" in page.inner_text("#error")  # the API's 401, in plain words
    assert page.is_visible("#key-dialog")
    page.fill("#key-input", web.key)
    page.click("#key-save")
    page.wait_for_selector("#jobs-count:has-text('no jobs')")
    assert page.is_hidden("#error")
    page.fill("#tenant", TENANT)
    page.press("#tenant", "Enter")
    page.reload()  # the same tab: the key is still there, nothing asked again
    page.wait_for_selector("#jobs-count:has-text('no jobs')")
    assert page.is_hidden("#error") and not page.is_visible("#key-dialog")
    assert page.evaluate("sessionStorage.getItem('aihub.key')") == web.key
    assert page.input_value("#tenant") == TENANT


def test_a_job_from_the_page_moves_live_and_plots_every_prediction(page, web):
    page.goto(web.url + "/#/new")
    body = json.loads(page.input_value("#job-body"))
    assert body["tenant_id"] == TENANT and body["config"] == QUICK_START_CONFIG  # the guide's quick start
    assert body["priority"] == "high"  # as the guide's quick start sends it
    page.fill("#job-body", json.dumps({**body, "config": {**body["config"], "validation_split": 1.5}}))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "validation_split" in page.inner_text("#error")  # the field and the reason, not a status code
    page.fill("#job-body", json.dumps(body))
    page.click("#submit")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    # Every progress value the page shows, as the watch stream moves it.
    page.evaluate(
        """() => { window.seen = []; const note = () => { const t = document.querySelector('#progress-text');
             if (t && window.seen[window.seen.length - 1] !== t.textContent) window.seen.push(t.textContent); };
           new MutationObserver(note).observe(document.querySelector('#job-head'), {childList: true, subtree: true}); note(); }"""
    )
    page.wait_for_selector("#progress-text:has-text('100 %')", timeout=180_000)
    seen = page.evaluate("window.seen")
    assert len(seen) >= 3 and seen[-1] == "100 %", seen  # moved live, not one jump
    assert page.get_attribute("#job-head .bar.big", "aria-valuenow") == "100"
    assert page.get_attribute("#job-head [data-status]", "data-status") == "COMPLETED"
    assert page.locator(".step.done").count() == 5
    page.wait_for_selector("#plot-forecast path[data-series=actual]")
    job = web.rest("GET", f"/ai/training/jobs/{job_id}")
    kept = web.rest("GET", f"/ai/training/jobs/{job_id}/predictions?max_points=2000")
    rows = int(job["metrics"]["validation_rows"])
    assert kept["total_points"] == rows == len(kept["points"])  # 1752 rows: under 2,000, none thinned
    for series in ("actual", "forecast", "baseline"):
        drawn = int(page.get_attribute(f"#plot-forecast path[data-series={series}]", "data-points"))
        assert drawn == rows if series != "baseline" else 0 < drawn <= rows, series
    assert int(page.get_attribute("#plot-residuals path[data-series=residual]", "data-points")) == rows
    version = web.rest("GET", f"/ai/training/models/{kept['model_id']}")
    assert int(page.get_attribute("#plot-importance svg", "data-points")) == len(version["feature_importance"])
    assert page.inner_text("[data-metric=mae] td.num") == f"{job['metrics']['mae']:.4g}"
    page.wait_for_selector("#log div:has-text('job completed')")
    page.click("#range button[data-days='7']")  # a week of the window
    assert int(page.get_attribute("#plot-forecast path[data-series=actual]", "data-points")) in range(168, 170)
    page.click("#range button[data-days='Infinity']")
    shot(page, "job-page.png")


def test_a_failed_job_shows_its_error(page, web):
    job_id = web.create({**QUICK_START_CONFIG, "feature_table": "no_such_table"})
    failed = web.wait(job_id)
    assert failed["status"] == "FAILED"
    page.goto(f"{web.url}/#/jobs/{job_id}")
    box = page.wait_for_selector("#job-failure")
    assert failed["error"]["reason"] in box.inner_text() and failed["error"]["message"] in box.inner_text()
    assert page.get_attribute("#job-head [data-status]", "data-status") == "FAILED"
    assert page.is_visible("#retry") and not page.is_visible("#cancel")


def test_a_job_is_cancelled_from_the_page(page, web):
    job_id = web.create(slow_config())
    page.goto(f"{web.url}/#/jobs/{job_id}")
    page.wait_for_selector("#cancel")
    page.wait_for_selector("#job-head [data-status=RUNNING]", timeout=60_000)
    deadline = time.monotonic() + 60
    while "mae" not in web.rest("GET", f"/ai/training/jobs/{job_id}")["metrics"]:  # a live MAE, measured while it trains
        assert time.monotonic() < deadline, "no live MAE"
        time.sleep(0.2)
    page.click("#cancel")
    page.wait_for_selector("#job-head [data-status=CANCELLED]")
    cancelled = web.wait(job_id)
    assert cancelled["status"] == "CANCELLED" and "mae" in cancelled["metrics"]  # the leftover live value is still stored
    page.wait_for_selector("#retry")
    # The jobs list shows no MAE for it: a cancelled job's last live value is no result.
    page.goto(web.url + "/#/jobs")
    row = page.wait_for_selector(f"#jobs tr[data-job='{job_id}']:has([data-status=CANCELLED])")
    assert row.query_selector_all("td.num")[0].inner_text() == ""


def test_an_anomaly_job_draws_its_flags(page, web):
    config = {**QUICK_START_CONFIG, "algorithm": "isolation_forest", "hyperparameters": {"n_estimators": 50}}
    job_id = web.create(
        {**config, "model_type": "anomaly", "features": ["temperature", "hour_of_day", "load_lag_1"], "feature_table": "load_forecasting"},
        "anomaly",
    )
    done = web.wait(job_id)
    assert done["status"] == "COMPLETED", done["error"]
    page.goto(f"{web.url}/#/jobs/{job_id}")
    page.wait_for_selector("#plot-signal g[data-series=flagged]")
    kept = web.rest("GET", f"/ai/training/jobs/{job_id}/predictions?max_points=2000")
    flagged = sum(p["flagged"] for p in kept["points"])
    assert flagged > 0 and int(page.get_attribute("#plot-signal g[data-series=flagged]", "data-points")) == flagged
    assert page.locator("#plot-signal g[data-series=flagged] circle").count() == flagged
    assert int(page.get_attribute("#plot-score path[data-series=score]", "data-points")) == len(kept["points"])
    assert page.locator("#plot-score line[data-series=threshold]").count() == 1


def test_the_models_page_compares_two_versions(page, web):
    second = web.create({**QUICK_START_CONFIG, "hyperparameters": {"n_estimators": 30, "num_leaves": 15}})
    done = web.wait(second)
    assert done["status"] == "COMPLETED", done["error"]
    versions = {(v["model_type"], v["version"]): v for v in web.rest("GET", f"/ai/training/models?tenant_id={TENANT}")["versions"]}
    v1, v2 = versions[("FORECAST", 1)], versions[("FORECAST", 2)]
    # With no tenant typed, the page lists the versions of the key's own tenant.
    page.fill("#tenant", "")
    page.press("#tenant", "Enter")
    page.goto(web.url + "/#/models")
    page.wait_for_selector("#models tbody tr[data-version]")
    assert page.locator("#models tbody tr[data-version]").count() == len(versions)
    page.fill("#tenant", TENANT)
    page.press("#tenant", "Enter")
    page.goto(web.url + "/#/models")
    page.wait_for_selector("#models tbody tr[data-version]")
    assert page.locator("#models tbody tr[data-version]").count() == len(versions)
    assert page.is_disabled("#compare")
    page.check(f"input[data-model='{v2['model_id']}']")
    page.check(f"input[data-model='{v1['model_id']}']")
    page.click("#compare")
    row = page.wait_for_selector("#comparison tr[data-metric=mae]")
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[1:3] == [f"{v1['metrics']['mae']:.4g}", f"{v2['metrics']['mae']:.4g}"]
    assert "hyperparameters" in page.inner_text("#comparison")  # what differs between the two configs
    # Aliases: v1 is production; the page moves it to v2 after a confirmation, and draws the
    # production forecast for the next hour after the last actuals (the weather for it imported).
    web.rest("PUT", f"/ai/training/models/{v1['model_id']}/aliases/production", {"reason": "first"})
    after = pd.Timestamp(demo_data.END) + pd.Timedelta(hours=1)  # the hour after the seeded actuals
    weather = f"timestamp,temperature,humidity\n{after:%Y-%m-%dT%H:%M:%S},1.5,80\n"
    resp = requests.post(f"{web.url}/ai/training/features/load_forecasting?tenant_id={TENANT}", data=weather,
                         headers={"authorization": f"Bearer {web.key}", "Content-Type": "text/csv"}, timeout=30)  # fmt: skip
    assert resp.ok, resp.text
    page.reload()
    page.wait_for_selector("#models tr[data-version='1'] .chip[data-alias=production]")
    page.wait_for_selector("#forecast-note")
    assert page.get_attribute("#forecast-note", "data-points") == "1"
    assert page.locator("#plot-production [data-series=actual]").get_attribute("data-points") == "168"
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.select_option("#alias-version", v2["model_id"])
    page.click("#alias-move")
    page.wait_for_selector("#models tr[data-version='2'] .chip[data-alias=production]")
    assert asked == ["Move alias production (forecast) from v1 to v2?"]
    moves = web.rest("GET", f"/ai/training/aliases?tenant_id={TENANT}&model_type=forecast")["aliases"][0]["moves"]
    assert [(m["from_version"], m["to_version"], m["reason"]) for m in moves] == [(1, 2, "moved on the web page"), (0, 1, "first")]
    page.wait_for_selector("#forecast-note")
    shot(page, "models-page.png")


def test_the_api_reference_lists_the_guides_endpoints_and_tries_health(page, web):
    """/docs: Swagger UI (vendored, same origin, strict CSP) on /openapi.json."""
    page.goto(web.url + "/docs")
    page.wait_for_selector("#swagger-ui .opblock")
    shown = page.inner_text("#swagger-ui")
    for path in ("/ai/training/jobs", "/ai/training/jobs/{job_id}", "/ai/training/jobs/{job_id}/logs",
                 "/ai/training/jobs/{job_id}/metrics", "/ai/training/models", "/ai/training/validate", "/health"):  # fmt: skip
        assert path in shown, path
    health = "#operations-service-GetHealth"
    page.click(f"{health} .opblock-summary")
    page.click(f"{health} .try-out__btn")
    page.click(f"{health} .execute")
    status = page.wait_for_selector(f"{health} .live-responses-table .response .response-col_status")
    assert status.inner_text().strip().startswith("200")
    assert '"status"' in page.inner_text(f"{health} .live-responses-table")
    shot(page, "api-reference.png")
