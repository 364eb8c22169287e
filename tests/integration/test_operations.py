"""Running unattended, through the real stack (gRPC server, PostgreSQL, Ray): webhooks
received by a real HTTP server on loopback (signed, retried, recorded), a degradation check
that alerts, the retention sweep, and /metrics scraped and parsed as Prometheus does."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import AsyncTrainingClient, ConfigValidationError, pb
from server import demo_data
from server.operations.retention import RetentionSweep
from storage import db, features, jobs, logs
from storage.errors import JobNotFound
from storage.tenancy import Scope
from tests.conftest import load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")
SECRET = "a-webhook-secret-of-some-length"


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next of ``statuses``
    (then 200), and keeps what it got."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.got: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(owner.statuses.pop(0) if owner.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/aihub"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, event: str) -> list[dict]:
        return [json.loads(b) for h, b in self.got if h["x-aihub-event"] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver([500])  # the first try fails: the delivery is retried
    yield r
    r.close()


async def until(predicate, timeout: float = 60.0, every: float = 0.2):
    async def go():
        while not (found := await predicate()):  # noqa: ASYNC110 - polls an API, not an event of ours
            await asyncio.sleep(every)
        return found

    return await asyncio.wait_for(go(), timeout)


def verified(headers: dict[str, str], body: bytes, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), headers["x-aihub-timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-aihub-signature"])


async def test_a_job_failed_for_good_is_posted_signed_and_retried(start_app, database_url, demo_frame, receiver):
    await load_demo(database_url, demo_frame)
    app = await start_app(alert_allow_private_targets=True, alert_retry_base_seconds=0.2, max_retries=0)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        target = await client.create_alert_target("acme-corp", receiver.url, secret=SECRET)
        assert target.secret == SECRET and list(target.events) == ["job_failed", "degradation", "promotion", "forecast_ready"]
        assert (await client.list_alert_targets("acme-corp"))[0].secret == ""  # never shown again
        job = await client.create_job("acme-corp", "forecast", tiny_config(feature_table="no_such_table"))
        failed = await asyncio.wait_for(client.wait(job.job_id), 120)
        assert failed.status == pb.FAILED and failed.error.reason == "DataLoadError"

        async def delivered():
            found = await client.list_alert_deliveries("acme-corp")
            return found if found and found[0].status == "DELIVERED" else None

        (delivery,) = await until(delivered)
        assert delivery.attempts == 2 and delivery.response_status == 200 and delivery.event == "job_failed"
        # A schedule's job that fails for good alerts too, naming its schedule.
        made = await client.create_schedule("acme-corp", "forecast", tiny_config(feature_table="no_such_table"), "0 2 * * 0")
        ran = await client.run_schedule(made.schedule_id)
        assert (await asyncio.wait_for(client.wait(ran.job.job_id), 120)).status == pb.FAILED

        async def second():
            found = await client.list_alert_deliveries("acme-corp")
            return found if len(found) == 2 and found[0].status == "DELIVERED" else None

        scheduled = json.loads((await until(second))[0].body)
        assert scheduled["job_id"] == ran.job.job_id and scheduled["schedule_id"] == made.schedule_id
    assert len(receiver.got) == 3  # the 500, then the retry; then the schedule's job
    headers, body = receiver.got[1]
    assert verified(headers, body, SECRET) and not verified(headers, body, "another-secret-entirely")
    assert headers["x-aihub-delivery"] == str(delivery.delivery_id) == receiver.got[0][0]["x-aihub-delivery"]
    alert = json.loads(body)
    assert alert["event"] == "job_failed" and alert["job_id"] == job.job_id and alert["tenant_id"] == "acme-corp"
    assert alert["reason"] == "DataLoadError" and "no_such_table" in alert["message"]
    assert alert["link"] == f"http://127.0.0.1:8000/ai/training/jobs/{job.job_id}"


async def test_webhooks_to_private_addresses_and_bad_targets_are_refused(start_app, database_url):
    app = await start_app(dispatch=False)  # the default: no loopback or private targets (SSRF)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        for url, needle in [
            ("http://127.0.0.1:9/x", "loopback"),
            ("http://10.1.2.3/x", "private"),
            ("http://169.254.169.254/latest", "link-local"),
            ("file:///etc/passwd", "http"),
            ("http://user:pw@93.184.215.14/", "password"),
        ]:
            with pytest.raises(ConfigValidationError) as err:
                await client.create_alert_target("acme-corp", url)
            assert err.value.violations[0][0] == "url" and needle in err.value.violations[0][1], err.value.violations
        made = await client.create_alert_target("acme-corp", "https://93.184.215.14/hook")  # a public address
        assert len(made.secret) >= 32  # made for the caller when not given
        with pytest.raises(ConfigValidationError, match="events"):
            await client.create_alert_target("acme-corp", "https://93.184.215.14/hook", events=["job_exploded"])
        with pytest.raises(ConfigValidationError, match="secret"):
            await client.create_alert_target("acme-corp", "https://93.184.215.14/hook", secret="short")


async def test_a_degraded_model_is_caught_by_its_schedule_and_alerted(start_app, database_url, demo_frame, receiver):
    await load_demo(database_url, demo_frame)
    app = await start_app(alert_allow_private_targets=True, alert_retry_base_seconds=0.2)
    app.checker.interval = 0.2
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        trained = await client.wait((await client.create_job("acme-corp", "forecast", tiny_config())).job_id)
        assert trained.status == pb.COMPLETED
        # The last ten days arrive, and the load has doubled (a new industrial customer).
        now = datetime.now(UTC)
        recent = demo_data.generate(f"{now - timedelta(days=10):%Y-%m-%d %H:00}", f"{now:%Y-%m-%d %H:00}")
        recent["load"] *= 2
        async with db.transaction(app.engine, Scope.of("acme-corp")) as conn:
            await features.import_frame(conn, demo_data.TABLE, recent)
        await client.create_alert_target("acme-corp", receiver.url, events=["degradation"], secret=SECRET)
        made = await client.create_schedule(
            "acme-corp", "forecast", tiny_config(), "0 6 * * *", action="evaluate", degradation={"window": "P7D", "max_mae_increase": 0.25}
        )

        ran = await client.run_schedule(made.schedule_id)
        assert not ran.job.job_id and ran.check.status == "PENDING"

        async def checked():
            shown = await client.get_schedule(made.schedule_id)
            return (
                shown.recent_checks[0]
                if shown.recent_checks and shown.recent_checks[0].status != "PENDING" and shown.recent_checks[0].status != "RUNNING"
                else None
            )

        check = await until(checked, 120)
        assert check.status == "DONE" and check.degraded, check
        assert check.metrics["mae"] > 1.25 * check.baseline["mae"] and "MAE" in check.message
        assert (check.window_end.ToDatetime(tzinfo=UTC) - check.window_start.ToDatetime(tzinfo=UTC)) == timedelta(days=7)
        await until(lambda: asyncio.sleep(0, result=receiver.bodies("degradation")), 30)
    (alert,) = receiver.bodies("degradation")
    assert alert["reason"] == "ModelDegraded" and alert["schedule_id"] == made.schedule_id and alert["version"] == trained.model_version
    assert alert["metrics"]["mae"] == pytest.approx(check.metrics["mae"])


async def test_retention_keeps_the_newest_and_the_kept_versions_and_prunes_old_rows(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    app = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        await client.update_quota("acme-corp", keep_versions=1)
        assert (await client.get_quota("acme-corp")).keep_versions == 1
        done = [await client.wait((await client.create_job("acme-corp", "forecast", tiny_config(random_seed=s))).job_id) for s in (1, 2)]
        versions = {v.version: v for v in await client.list_models("acme-corp")}
        first, second = versions[done[0].model_version], versions[done[1].model_version]
        kept = await client.keep_model(first.model_id)
        assert kept.keep
        failed = await client.wait((await client.create_job("acme-corp", "forecast", tiny_config(feature_table="nope"))).job_id)
        assert failed.status == pb.FAILED

        swept = await app.retention.sweep()
        assert swept.versions == 0  # v1 is kept, v2 is the newest
        third = await client.wait((await client.create_job("acme-corp", "forecast", tiny_config(random_seed=3))).job_id)
        swept = await app.retention.sweep()
        assert swept.versions == 1
        gone = await client.get_model(second.model_id)
        assert gone.deleted_at.seconds > 0 and not Path(gone.artifact_uri.removeprefix("file://")).exists()
        left = {v.version for v in await client.list_models("acme-corp")}
        assert left == {first.version, third.model_version}
        assert Path(first.artifact_uri.removeprefix("file://")).exists()

    # Log lines and finished jobs past their age go, in batches; jobs with a version stay.
    sweep = RetentionSweep(app.dispatch_engine, app.retention.artifacts, log_days=1, job_days=2, batch=3)
    result = await sweep.sweep(now=datetime.now(UTC) + timedelta(days=3))
    assert result.removed["jobs"] == 1 and result.removed["log_lines"] > 3
    async with db.transaction(app.engine, Scope.of("acme-corp")) as conn:
        with pytest.raises(JobNotFound):
            await jobs.get(conn, __import__("uuid").UUID(failed.job_id))
        assert (await jobs.get(conn, __import__("uuid").UUID(third.job_id))).status.value == "COMPLETED"
        assert await logs.after(conn, __import__("uuid").UUID(third.job_id)) == []


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict[str, list], sample: str, **labels: str) -> float:
    for family in families.values():
        for s in family:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {sample} {labels}")


async def test_metrics_are_scraped_and_parsed(start_app, database_url, demo_frame):
    await load_demo(database_url, demo_frame)
    await load_demo(database_url, demo_frame.head(200), tenant="other-utility")
    app = await start_app(metrics_max_tenants=1, metrics_tenant_labels=True)
    assert app.metrics_port > 0
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        ok = await client.wait((await client.create_job("acme-corp", "forecast", tiny_config())).job_id)
        bad = await client.wait((await client.create_job("acme-corp", "forecast", tiny_config(feature_table="nope"))).job_id)
        await client.create_job("other-utility", "forecast", tiny_config(), priority="low")
        assert ok.status == pb.COMPLETED and bad.status == pb.FAILED
        families = await asyncio.to_thread(scrape, app.metrics_port)
    assert value(families, "aihub_jobs", status="COMPLETED", priority="normal", tenant="acme-corp") == 1
    assert value(families, "aihub_jobs", status="FAILED", priority="normal", tenant="acme-corp") == 1
    assert value(families, "aihub_jobs", tenant="_other", priority="low") == 1  # a bounded label set
    assert value(families, "aihub_rpc_requests_total", method="CreateTrainingJob", code="OK") == 3
    assert value(families, "aihub_rpc_duration_seconds_count", method="CreateTrainingJob") == 3
    assert value(families, "aihub_job_attempts_total", algorithm="lgbm", status="COMPLETED") == 1
    assert value(families, "aihub_job_failures_total", reason="DataLoadError") == 1
    assert value(families, "aihub_job_queue_wait_seconds_count", algorithm="lgbm") == 2
    assert value(families, "aihub_job_run_seconds_bucket", algorithm="lgbm", status="COMPLETED", le="+Inf") == 1
    assert value(families, "aihub_ray_resources", resource="CPU", state="total") == 2
    assert value(families, "aihub_dispatcher_running_jobs") >= 0 and value(families, "aihub_database_up") == 1
    for name in families:
        assert name.startswith(("aihub_", "python_", "process_")), name
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{app.metrics_port}/elsewhere", timeout=5)
    assert err.value.code == 404


async def test_metrics_name_no_tenant_unless_asked(start_app, database_url, demo_frame):
    # Any local process can read /metrics: by default aihub_jobs is summed over tenants
    # (AIHUB_METRICS_TENANT_LABELS turns the label on, above).
    await load_demo(database_url, demo_frame)
    app = await start_app()
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        done = await client.wait((await client.create_job("acme-corp", "forecast", tiny_config())).job_id)
        assert done.status == pb.COMPLETED
        families = await asyncio.to_thread(scrape, app.metrics_port)
    assert value(families, "aihub_jobs", status="COMPLETED", priority="normal") == 1
    labels = {k for samples in families.values() for sample in samples for k in sample.labels}
    shown = {v for samples in families.values() for sample in samples for v in sample.labels.values()}
    assert "tenant" not in labels and "acme-corp" not in shown
