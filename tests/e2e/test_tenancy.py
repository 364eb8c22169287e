"""Tenants you can trust, through the real stack (Envoy + gRPC + PostgreSQL + Ray), with
authentication required: tenant B's key, no key, a revoked key and an admin key against
tenant A's job, logs, watch, metrics, model, evaluation and data, over every RPC and every
REST path. Zero leaks: another tenant's resources answer NOT_FOUND (never revealing that
they exist), naming another tenant is PERMISSION_DENIED."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import pytest_asyncio
import requests

from client import AsyncTrainingClient, pb
from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import admin_pb2_grpc as admin_grpc
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from storage import db
from storage import forecasts as store
from storage.tenancy import Scope
from tests.conftest import free_port, load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN_KEY = "admin-" + "k" * 40
A, B = "acme-corp", "globex"


@dataclass
class World:
    app: object
    rest: str
    key_a: str
    key_b: str
    revoked: str
    job_a: str
    model_a: str
    job_b: str

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.app.port}")


@pytest_asyncio.fixture(loop_scope="session")
async def world(start_app, database_url, demo_frame) -> AsyncIterator[World]:
    from server.api.envoy import Envoy

    await load_demo(database_url, demo_frame, A)
    await load_demo(database_url, demo_frame, B)
    app = await start_app(auth="required", bootstrap_admin_key=ADMIN_KEY)
    target = f"127.0.0.1:{app.port}"
    async with AsyncTrainingClient(target, api_key=ADMIN_KEY) as admin:
        key_a = (await admin.create_key(A, name="team a")).key
        key_b = (await admin.create_key(B, name="team b")).key
        doomed = await admin.create_key(B, name="leaver")
        await admin.revoke_key(doomed.key_id)
    async with AsyncTrainingClient(target, api_key=key_a) as ca, AsyncTrainingClient(target, api_key=key_b) as cb:
        job_a = await ca.create_job("", "forecast", tiny_config())  # no tenant_id: the key's tenant
        job_b = await cb.create_job(B, "forecast", tiny_config())
        done = await asyncio.wait_for(ca.wait(job_a.job_id), 120)
        await asyncio.wait_for(cb.wait(job_b.job_id), 120)
        assert done.status == pb.COMPLETED and done.tenant_id == A
        (model_a,) = await ca.list_models("")
        await ca.set_alias("production", model_a.model_id, reason="tenant A's live model")
    async with db.transaction(app.engine, Scope.of(A)) as conn:  # a point in tenant A's forecast store
        hour = datetime(2025, 1, 1, tzinfo=UTC)
        await store.write(conn, uuid.UUID(model_a.model_id), "production", None, [store.Point(hour, "", 1.0, hour - timedelta(hours=1))])
    envoy = Envoy(grpc_port=app.port, http_port=free_port())
    await asyncio.to_thread(envoy.start)
    try:
        yield World(app, envoy.url, key_a, key_b, doomed.key, job_a.job_id, model_a.model_id, job_b.job_id)
    finally:
        await asyncio.to_thread(envoy.stop)


def _grpc_calls(w: World) -> dict[str, tuple[Callable, object, grpc.StatusCode]]:
    """name -> (stub method getter, request, what tenant B's key must get)."""
    nf, denied = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
    ts = lambda m: lambda ch: getattr(pb_grpc.TrainingServiceStub(ch), m)  # noqa: E731
    ad = lambda m: lambda ch: getattr(admin_grpc.AdminServiceStub(ch), m)  # noqa: E731
    cfg = pb.TrainingConfig(algorithm="lgbm", training_start="2024-03-01T00:00:00", training_end="2024-03-31T23:00:00", target="load")
    cfg.features.extend(["temperature"])
    return {
        "GetTrainingJob": (ts("GetTrainingJob"), pb.GetTrainingJobRequest(job_id=w.job_a), nf),
        "CancelTrainingJob": (ts("CancelTrainingJob"), pb.CancelTrainingJobRequest(job_id=w.job_a), nf),
        "RetryTrainingJob": (ts("RetryTrainingJob"), pb.RetryTrainingJobRequest(job_id=w.job_a), nf),
        "UpdateTrainingJob": (ts("UpdateTrainingJob"), pb.UpdateTrainingJobRequest(job_id=w.job_a, priority=pb.HIGH), nf),
        "GetTrainingJobMetrics": (ts("GetTrainingJobMetrics"), pb.GetTrainingJobMetricsRequest(job_id=w.job_a), nf),
        "StreamTrainingJobLogs": (ts("StreamTrainingJobLogs"), pb.StreamTrainingJobLogsRequest(job_id=w.job_a, follow=False), nf),
        "WatchTrainingJob": (ts("WatchTrainingJob"), pb.WatchTrainingJobRequest(job_id=w.job_a), nf),
        "ListTrainingJobs(A)": (ts("ListTrainingJobs"), pb.ListTrainingJobsRequest(tenant_id=A), denied),
        "CreateTrainingJob(A)": (
            ts("CreateTrainingJob"),
            pb.CreateTrainingJobRequest(tenant_id=A, model_type=pb.FORECAST, config=cfg),
            denied,
        ),
        "ImportFeatureData(A)": (
            ts("ImportFeatureData"),
            iter([pb.ImportFeatureDataRequest(tenant_id=A, table="load_forecasting", data=b"timestamp,load\n2024-01-01T00:00:00,1\n")]),
            denied,
        ),
        "ListModelVersions(A)": (ts("ListModelVersions"), pb.ListModelVersionsRequest(tenant_id=A), denied),
        "GetModelVersion": (ts("GetModelVersion"), pb.GetModelVersionRequest(model_id=w.model_a), nf),
        "GetModelVersion(A)": (ts("GetModelVersion"), pb.GetModelVersionRequest(model_id=w.model_a, tenant_id=A), denied),
        "EvaluateModelVersion": (
            ts("EvaluateModelVersion"),
            pb.EvaluateModelVersionRequest(
                model_id=w.model_a, evaluation_start="2024-04-01T00:00:00", evaluation_end="2024-04-07T23:00:00"
            ),
            nf,
        ),
        "DeleteModelVersion": (ts("DeleteModelVersion"), pb.DeleteModelVersionRequest(model_id=w.model_a), nf),
        "ForecastModelVersion": (ts("ForecastModelVersion"), pb.ForecastModelVersionRequest(model_id=w.model_a), nf),
        "ForecastModelVersion(alias of A)": (
            ts("ForecastModelVersion"),
            pb.ForecastModelVersionRequest(tenant_id=A, model_type=pb.FORECAST, alias="production"),
            denied,
        ),
        "ForecastModelVersion(alias)": (
            ts("ForecastModelVersion"),
            pb.ForecastModelVersionRequest(model_type=pb.FORECAST, alias="production"),
            nf,
        ),
        "DetectModelVersion": (
            ts("DetectModelVersion"),
            pb.DetectModelVersionRequest(model_id=w.model_a, start="2024-04-01T00:00:00", end="2024-04-02T00:00:00"),
            nf,
        ),
        "SetModelAlias": (ts("SetModelAlias"), pb.SetModelAliasRequest(model_id=w.model_a, alias="production"), nf),
        "DeleteModelAlias(A)": (
            ts("DeleteModelAlias"),
            pb.DeleteModelAliasRequest(tenant_id=A, model_type="forecast", alias="production"),
            denied,
        ),
        "DeleteModelAlias": (ts("DeleteModelAlias"), pb.DeleteModelAliasRequest(model_type="forecast", alias="production"), nf),
        "ListModelAliases(A)": (ts("ListModelAliases"), pb.ListModelAliasesRequest(tenant_id=A), denied),
        "ListForecasts(A)": (ts("ListForecasts"), pb.ListForecastsRequest(tenant_id=A), denied),
        "CreateApiKey": (ad("CreateApiKey"), admin_pb.CreateApiKeyRequest(tenant_id=A), denied),
        "ListApiKeys": (ad("ListApiKeys"), admin_pb.ListApiKeysRequest(), denied),
        "RevokeApiKey": (ad("RevokeApiKey"), admin_pb.RevokeApiKeyRequest(key_id="x"), denied),
        "GetTenantQuota": (ad("GetTenantQuota"), admin_pb.GetTenantQuotaRequest(tenant_id=A), denied),
        "UpdateTenantQuota": (ad("UpdateTenantQuota"), admin_pb.UpdateTenantQuotaRequest(tenant_id=B, max_queued_jobs=5), denied),
        "ListAuditEvents": (ad("ListAuditEvents"), admin_pb.ListAuditEventsRequest(), denied),
        "ListAuditEvents(A)": (ad("ListAuditEvents"), admin_pb.ListAuditEventsRequest(tenant_id=A), denied),
    }


async def _code(method, request, key: str | None) -> tuple[grpc.StatusCode, list]:
    """The status of one call, and what it answered (every message of a stream)."""
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    try:
        call = method(request, metadata=metadata, timeout=30)
        if hasattr(call, "__aiter__"):
            return grpc.StatusCode.OK, [m async for m in call]
        return grpc.StatusCode.OK, [await call]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), []


async def test_grpc_cross_tenant_matrix_leaks_nothing(world, caplog):
    w = world
    calls = _grpc_calls(w)
    results = []
    async with w.channel() as ch:
        for name in calls:
            for who, key in [("tenant B", w.key_b), ("no key", None), ("revoked key", w.revoked)]:
                get, request, expected = _grpc_calls(w)[name]  # a fresh request (an import's chunks are consumed)
                if key != w.key_b:
                    expected = grpc.StatusCode.UNAUTHENTICATED
                code, answered = await _code(get(ch), request, key)
                results.append((name, who, code))
                assert code == expected, f"{name} with {who}: {code}, expected {expected}"
                assert not answered, f"{name} with {who} answered {answered}"
        # Tenant B's own listing holds only B's job; A's job is untouched by every refused call.
        own = await _code(pb_grpc.TrainingServiceStub(ch).ListTrainingJobs, pb.ListTrainingJobsRequest(), w.key_b)
        assert [j.job_id for j in own[1][0].jobs] == [w.job_b]
        # An admin key acts across tenants, and the audit log says so.
        with caplog.at_level(logging.INFO, logger="aihub.audit"):
            code, got = await _code(pb_grpc.TrainingServiceStub(ch).GetTrainingJob, pb.GetTrainingJobRequest(job_id=w.job_a), ADMIN_KEY)
            assert code == grpc.StatusCode.OK and got[0].tenant_id == A and got[0].status == pb.COMPLETED
            code, got = await _code(pb_grpc.TrainingServiceStub(ch).ListTrainingJobs, pb.ListTrainingJobsRequest(), ADMIN_KEY)
            assert {j.tenant_id for j in got[0].jobs} == {A, B}
            model = await _code(pb_grpc.TrainingServiceStub(ch).GetModelVersion, pb.GetModelVersionRequest(model_id=w.model_a), ADMIN_KEY)
            assert model[0] == grpc.StatusCode.OK
        audit = [r.getMessage() for r in caplog.records if r.name == "aihub.audit"]
        assert any("GetTrainingJob for every tenant" in line for line in audit), audit
        # Tenant A's own key still sees its job, model and alias as they were.
        code, got = await _code(pb_grpc.TrainingServiceStub(ch).GetModelVersion, pb.GetModelVersionRequest(model_id=w.model_a), w.key_a)
        assert code == grpc.StatusCode.OK and not got[0].HasField("deleted_at") and list(got[0].aliases) == ["production"]
        code, got = await _code(pb_grpc.TrainingServiceStub(ch).ListModelAliases, pb.ListModelAliasesRequest(), w.key_a)
        assert [(a.alias, a.model_id, len(a.moves)) for a in got[0].aliases] == [("production", w.model_a, 1)]
        code, got = await _code(pb_grpc.TrainingServiceStub(ch).GetTrainingJob, pb.GetTrainingJobRequest(job_id=w.job_a), w.key_a)
        assert got[0].status == pb.COMPLETED and got[0].priority == pb.NORMAL
        # Calls on no tenant's data: any valid key, never without one; health always.
        for get, request in [
            (pb_grpc.TrainingServiceStub(ch).ValidateTrainingConfig, pb.ValidateTrainingConfigRequest()),
            (pb_grpc.TrainingServiceStub(ch).ListRayClusters, pb.ListRayClustersRequest()),
        ]:
            for who, key, expected in [
                ("tenant B", w.key_b, grpc.StatusCode.OK),
                ("no key", None, grpc.StatusCode.UNAUTHENTICATED),
                ("revoked key", w.revoked, grpc.StatusCode.UNAUTHENTICATED),
            ]:
                code, _ = await _code(get, request, key)
                results.append((get, who, code))
                assert code == expected, f"{get} with {who}: {code}"
        code, (health,) = await _code(pb_grpc.TrainingServiceStub(ch).GetHealth, pb.GetHealthRequest(), None)
        assert code == grpc.StatusCode.OK and dict(health.queue) == {}
        code, (health,) = await _code(pb_grpc.TrainingServiceStub(ch).GetHealth, pb.GetHealthRequest(), w.key_b)
        assert health.queue["COMPLETED"] == 1  # tenant B's own counts only
    assert len(results) == 3 * len(calls) + 6
    print(f"gRPC matrix: {len(results)} cases, 0 leaks")


def _rest_cases(w: World) -> list[tuple[str, str, dict, int]]:
    """(method, path, request kwargs, what tenant B's key must get)."""
    csv = "timestamp,load\n2024-01-01T00:00:00,1\n"
    body = {"tenant_id": A, "model_type": "forecast", "config": tiny_config()}
    return [
        ("GET", f"/ai/training/jobs/{w.job_a}", {}, 404),
        ("DELETE", f"/ai/training/jobs/{w.job_a}", {}, 404),
        ("POST", f"/ai/training/jobs/{w.job_a}/retry", {}, 404),
        ("PATCH", f"/ai/training/jobs/{w.job_a}", {"json": {"priority": "high"}}, 404),
        ("GET", f"/ai/training/jobs/{w.job_a}/metrics", {}, 404),
        ("GET", f"/ai/training/jobs/{w.job_a}/logs?follow=false", {}, 404),
        ("GET", f"/ai/training/jobs/{w.job_a}/watch", {}, 404),
        ("GET", f"/ai/training/jobs?tenant_id={A}", {}, 403),
        ("POST", "/ai/training/jobs", {"json": body}, 403),
        ("POST", f"/ai/training/features/load_forecasting?tenant_id={A}", {"data": csv, "headers": {"Content-Type": "text/csv"}}, 403),
        ("GET", f"/ai/training/models?tenant_id={A}", {}, 403),
        ("GET", f"/ai/training/models/{w.model_a}", {}, 404),
        (
            "POST",
            f"/ai/training/models/{w.model_a}:evaluate",
            {"json": {"evaluation_start": "2024-04-01T00:00:00", "evaluation_end": "2024-04-07T23:00:00"}},
            404,
        ),
        ("DELETE", f"/ai/training/models/{w.model_a}", {}, 404),
        ("POST", f"/ai/training/models/{w.model_a}:forecast", {"json": {}}, 404),
        ("POST", "/ai/training/models:forecast", {"json": {"tenant_id": A, "model_type": "forecast", "alias": "production"}}, 403),
        ("POST", "/ai/training/models:forecast", {"json": {"model_type": "forecast", "alias": "production"}}, 404),
        ("POST", f"/ai/training/models/{w.model_a}:detect", {"json": {"start": "2024-04-01T00:00:00", "end": "2024-04-02T00:00:00"}}, 404),
        ("PUT", f"/ai/training/models/{w.model_a}/aliases/production", {"json": {"reason": "take over"}}, 404),
        ("DELETE", f"/ai/training/aliases/production?tenant_id={A}&model_type=forecast", {}, 403),
        ("DELETE", "/ai/training/aliases/production?model_type=forecast", {}, 404),
        ("GET", f"/ai/training/aliases?tenant_id={A}", {}, 403),
        ("GET", f"/ai/training/forecasts?tenant_id={A}", {}, 403),
        ("GET", "/ai/training/audit", {}, 403),
        ("GET", f"/ai/training/audit?tenant_id={A}", {}, 403),
    ]


GUIDE_ERRORS = {401: {"Unauthenticated"}, 403: {"PermissionDenied"}, 404: {"JobNotFound", "ModelNotFound", "AliasNotFound"}}


async def test_rest_cross_tenant_matrix_leaks_nothing(world):
    w = world
    cases = _rest_cases(w)
    count = 0
    for method, path, kwargs, expected_b in cases:
        for who, key, expected in [("tenant B", w.key_b, expected_b), ("no key", None, 401), ("revoked key", w.revoked, 401)]:
            headers = {**kwargs.get("headers", {}), **({"Authorization": f"Bearer {key}"} if key else {})}
            resp = await asyncio.to_thread(requests.request, method, w.rest + path, timeout=30, **{**kwargs, "headers": headers})
            count += 1
            assert resp.status_code == expected, f"{method} {path} with {who}: {resp.status_code} {resp.text[:200]}"
            if resp.status_code >= 400:  # the guide's error body, naming the error
                err = resp.json()
                assert err["error"] in GUIDE_ERRORS[resp.status_code] and isinstance(err["details"], dict), resp.text[:300]
            if resp.status_code != 403:  # 403 names the tenant the caller asked for; nothing else may show
                assert A not in resp.text and '"mae"' not in resp.text, f"{method} {path} leaked: {resp.text[:300]}"
    for method, path, kwargs in [
        ("POST", "/ai/training/validate", {"json": {"config": tiny_config()}}),
        ("GET", "/ai/training/ray/clusters", {}),
    ]:
        for key, expected in [(w.key_b, 200), (None, 401), (w.revoked, 401)]:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            resp = await asyncio.to_thread(requests.request, method, w.rest + path, headers=headers, timeout=30, **kwargs)
            count += 1
            assert resp.status_code == expected, f"{method} {path}: {resp.status_code} {resp.text[:200]}"
    # B's own listing through REST: only B's jobs.
    for key, points in ((w.key_b, 0), (w.key_a, 1)):  # each key sees its own tenant's forecast store only
        got = await asyncio.to_thread(
            requests.get, f"{w.rest}/ai/training/forecasts", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert got.status_code == 200 and len(got.json()["points"]) == points, got.text
    own = await asyncio.to_thread(requests.get, f"{w.rest}/ai/training/jobs", headers={"Authorization": f"Bearer {w.key_b}"}, timeout=30)
    assert own.status_code == 200 and {j["tenant_id"] for j in own.json()["jobs"]} == {B}
    # The admin key reads A's job through REST; A's own key too, unchanged.
    for key in (ADMIN_KEY, w.key_a):
        got = await asyncio.to_thread(
            requests.get, f"{w.rest}/ai/training/jobs/{w.job_a}", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert got.status_code == 200 and got.json()["status"] == "COMPLETED" and got.json()["priority"] == "NORMAL"
    # Health answers without a key, with no counts.
    health = await asyncio.to_thread(requests.get, f"{w.rest}/health", timeout=30)
    assert health.status_code == 200 and health.json()["queue"] == {}
    assert count == 3 * len(cases) + 6
    print(f"REST matrix: {count} cases, 0 leaks")


async def test_oversized_keys_and_paths_get_the_guides_error_body(world):
    # Headers up to Envoy's 60 KiB reach our interceptor (not gRPC's own metadata limit, whose
    # RESOURCE_EXHAUSTED the transcoder showed as a bare 429 {"code": 8, ...}).
    w = world
    cases = [
        ("GET", "/ai/training/jobs", {"Authorization": "Bearer " + "k" * 50_000}, 401, "Unauthenticated"),
        ("GET", "/ai/training/jobs/" + "j" * 10_000, {"Authorization": f"Bearer {w.key_b}"}, 400, "InvalidRequest"),
        ("GET", "/ai/training/jobs", {"Authorization": f"Bearer {w.key_b}", "X-Padding": "p" * 70_000}, 431, "InvalidRequest"),
    ]
    for method, path, headers, status, error in cases:
        resp = await asyncio.to_thread(requests.request, method, w.rest + path, headers=headers, timeout=30)
        assert resp.status_code == status, f"{path[:40]}: {resp.status_code} {resp.text[:300]}"
        body = resp.json()
        assert body["error"] == error and isinstance(body["details"], dict), resp.text[:300]
        assert "metadata" not in resp.text
    async with AsyncTrainingClient(f"127.0.0.1:{w.app.port}", api_key="k" * 50_000) as c:
        with pytest.raises(Exception, match="not known") as err:
            await c.list_jobs()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_keys_expire_and_the_audit_trail_lists_what_admins_did(world, capsys, monkeypatch):
    from client import cli

    w = world
    target = f"127.0.0.1:{w.app.port}"
    async with AsyncTrainingClient(target, api_key=ADMIN_KEY) as admin:
        short = await admin.create_key(B, name="short-lived", expires_at=datetime.now(UTC) + timedelta(seconds=2))
        with pytest.raises(Exception, match="future"):
            await admin.create_key(B, expires_at=datetime.now(UTC) - timedelta(seconds=1))
        async with AsyncTrainingClient(target, api_key=short.key) as c:
            await c.list_jobs()  # works until it expires
            await asyncio.sleep(2.5)
            with pytest.raises(Exception, match="not known") as err:
                await c.list_jobs()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        listed = {k.key_id: k for k in await admin.list_keys(B)}
        assert listed[short.key_id].HasField("expires_at") and listed[short.key_id].HasField("last_used_at")
        assert not listed[short.key_id].local  # made with authentication required
        await admin.list_jobs()  # an admin call for every tenant: recorded
        deadline = asyncio.get_running_loop().time() + 10
        while not (calls := (await admin.list_audit_events(action="admin.call")).events):
            assert asyncio.get_running_loop().time() < deadline, "the admin call never reached the audit trail"
            await asyncio.sleep(0.2)
        events = (await admin.list_audit_events(page_size=1000)).events
    actions = {(e.action, e.tenant_id) for e in events}
    assert {("key.create", A), ("key.create", B), ("key.revoke", B), ("alias.set", A)} <= actions, actions
    assert any(e.target == "ListTrainingJobs" and e.tenant_id == "*" and e.key_id.startswith("boot-") for e in calls)
    assert all(e.id > f.id for e, f in itertools.pairwise(events))  # newest first
    created = next(e for e in events if e.action == "key.create" and e.target == short.key_id)
    assert created.details["expires_at"] and created.actor.startswith("admin key")
    # Paging: two pages of one event each are the two newest.
    async with AsyncTrainingClient(target, api_key=ADMIN_KEY) as admin:
        first = await admin.list_audit_events(page_size=1)
        second = await admin.list_audit_events(page_size=1, page_token=first.next_page_token)
    assert first.next_page_token and second.events[0].id < first.events[0].id
    # REST: admins read it; the guide's body for anyone else (the matrix covers tenant keys).
    got = await asyncio.to_thread(
        requests.get, f"{w.rest}/ai/training/audit?action=key.revoke", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    assert got.status_code == 200 and {e["action"] for e in got.json()["events"]} == {"key.revoke"}, got.text[:300]
    # CLI
    monkeypatch.setenv("AIHUB_API_KEY", ADMIN_KEY)
    code = await asyncio.to_thread(cli.main, ["--target", target, "audit", "list", "--tenant", B, "--action", "key.create"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and {e["target"] for e in out["events"]} >= {short.key_id}


async def test_a_key_cannot_read_another_tenants_feature_data(world):
    # Tenant B trains on a feature table only tenant A has: the job cannot see A's rows.
    w = world
    async with AsyncTrainingClient(f"127.0.0.1:{w.app.port}", api_key=w.key_a) as ca:
        frame = "timestamp,load,temperature\n" + "".join(
            f"2024-03-{d:02d}T{h:02d}:00:00,{d + h},{h}\n" for d in range(1, 29) for h in range(24)
        )
        await ca.import_data("", "only_acme", frame.encode())
    async with AsyncTrainingClient(f"127.0.0.1:{w.app.port}", api_key=w.key_b) as cb:
        job = await cb.create_job("", "forecast", tiny_config(feature_table="only_acme", features=["temperature"]))
        failed = await asyncio.wait_for(cb.wait(job.job_id), 120)
    assert failed.status == pb.FAILED and failed.error.reason == "DataLoadError"
    assert "features.only_acme" in failed.error.message and failed.error.details["tenant_id"] == B


async def test_keys_cli_prints_the_key_once_as_json(world, monkeypatch, capsys):
    from client import cli

    w = world
    monkeypatch.setenv("AIHUB_API_KEY", ADMIN_KEY)
    target = f"127.0.0.1:{w.app.port}"
    code = await asyncio.to_thread(cli.main, ["--target", target, "keys", "create", "--tenant", "initech", "--output", "json"])
    made = json.loads(capsys.readouterr().out)
    assert code == 0 and set(made) == {"key", "key_id", "tenant_id"} and made["tenant_id"] == "initech"
    # The new key works for its tenant; the listing never shows a secret.
    async with AsyncTrainingClient(target, api_key=made["key"]) as c:
        assert (await c.list_jobs()).jobs == []
    code = await asyncio.to_thread(cli.main, ["--target", target, "keys", "list", "--tenant", "initech"])
    listed = capsys.readouterr().out
    assert code == 0 and made["key_id"] in listed and made["key"] not in listed
    code = await asyncio.to_thread(cli.main, ["--target", target, "keys", "revoke", made["key_id"]])
    assert code == 0
    async with AsyncTrainingClient(target, api_key=made["key"]) as c:
        with pytest.raises(Exception, match="revoked"):
            await c.list_jobs()
    # A tenant's key cannot manage keys.
    monkeypatch.setenv("AIHUB_API_KEY", w.key_a)
    assert await asyncio.to_thread(cli.main, ["--target", target, "keys", "list"]) == 1
    assert "admin" in capsys.readouterr().err


async def test_quota_breaches_are_429_naming_the_limit(world):
    w = world
    async with AsyncTrainingClient(f"127.0.0.1:{w.app.port}", api_key=ADMIN_KEY) as admin:
        await admin.update_quota(B, max_queued_jobs=0, max_priority="high", max_import_bytes=100)
        quota = await admin.get_quota(B)
    assert quota.max_queued_jobs == 0 and quota.max_priority == pb.HIGH
    headers = {"Authorization": f"Bearer {w.key_b}"}
    for priority, limit in (("normal", "max_queued_jobs"), ("critical", "max_priority")):
        payload = {"model_type": "forecast", "config": tiny_config(), "priority": priority}
        resp = await asyncio.to_thread(requests.post, f"{w.rest}/ai/training/jobs", json=payload, headers=headers, timeout=30)
        assert resp.status_code == 429, resp.text
        err = resp.json()
        assert err["error"] == "QuotaExceeded" and err["details"]["limit"] == limit and err["details"]["tenant_id"] == B
    csv = "timestamp,load\n" + "".join(f"2024-01-01T{h:02d}:00:00,{h}\n" for h in range(24))
    resp = await asyncio.to_thread(
        requests.post, f"{w.rest}/ai/training/features/extra", data=csv, headers={**headers, "Content-Type": "text/csv"}, timeout=30
    )
    assert resp.status_code == 429 and resp.json()["details"]["limit"] == "max_import_bytes", resp.text


async def test_unary_calls_have_a_server_side_deadline(start_app, monkeypatch):
    app = await start_app(request_timeout_seconds=0.3)

    async def stuck(self) -> list:
        await asyncio.sleep(5)
        return []

    monkeypatch.setattr(type(app.clusters), "refresh", stuck)
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as c:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(Exception) as err:
            await c.list_clusters()
        assert loop.time() - t0 < 3
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and err.value.reason == "DeadlineExceeded"
