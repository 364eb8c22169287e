"""Hostile input at the request boundary, through Envoy and gRPC: every malformed value is a
4xx naming the field (never a 500 or 502, never PostgreSQL's or Python's internals), echoed
values are cut short, limits are named; and a property-based fuzz (hypothesis) of Create,
Validate, Update and Import over REST and gRPC gets only 2xx/4xx (gRPC: no INTERNAL,
UNKNOWN or UNAVAILABLE), with a healthy server after."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
import requests
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from tests.conftest import free_port, load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

FUZZ_EXAMPLES = 250  # per endpoint and transport: 2,000 requests in all
BAD_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}


@pytest_asyncio.fixture(loop_scope="session")
async def stack(start_app, database_url, demo_frame) -> AsyncIterator[tuple[str, int]]:
    """Envoy in front of a server that queues but does not run jobs (a fuzz may create valid ones)."""
    from server.api.envoy import Envoy

    await load_demo(database_url, demo_frame)
    app = await start_app(dispatch=False)
    envoy = Envoy(grpc_port=app.port, http_port=free_port())
    await asyncio.to_thread(envoy.start)
    try:
        yield envoy.url, app.port
    finally:
        await asyncio.to_thread(envoy.stop)


def body(**changes) -> dict:
    out = {"tenant_id": "acme-corp", "model_type": "forecast", "config": tiny_config()}
    for key, value in changes.items():
        if key.startswith("config."):
            out["config"][key[len("config.") :]] = value
        else:
            out[key] = value
    return out


def hp(**values) -> dict:
    return {"hyperparameters": values}


def _fields(resp: requests.Response) -> list[str]:
    """The fields a guide-shaped error body names (details.field and every violation)."""
    details = resp.json().get("details", {})
    return [details.get("field", ""), *(v["field"] for v in details.get("violations", []))]


LONG = "x" * 20_000
CASES = [
    # (name, path, json body or raw bytes, expected status, a field the error must name)
    ("time out of range", "/ai/training/jobs", body(**{"config.training_end": "9999-12-31T23:59:59-01:00"}), 400, "training_end"),
    ("year 1", "/ai/training/jobs", body(**{"config.training_start": "0001-01-01T00:00:00+01:00"}), 400, "training_start"),
    ("NUL in tenant_id", "/ai/training/jobs", body(tenant_id="acme\x00corp"), 400, "tenant_id"),
    ("traversal tenant_id", "/ai/training/jobs", body(tenant_id="../../../../../../../../tmp/x"), 400, "tenant_id"),
    ("absolute tenant_id", "/ai/training/jobs", body(tenant_id="/tmp/x"), 400, "tenant_id"),
    ("dot-dot tenant_id", "/ai/training/jobs", body(tenant_id="evil/../acme-corp"), 400, "tenant_id"),
    ("NUL in request_id", "/ai/training/jobs", body(request_id="r\x00"), 400, "request_id"),
    ("NUL in metadata", "/ai/training/jobs", body(metadata={"k": "v\x00"}), 400, "metadata.k"),
    ("many metadata", "/ai/training/jobs", body(metadata={f"k{i}": "v" for i in range(100)}), 400, "metadata"),
    (
        "huge integer",
        "/ai/training/jobs",
        b'{"tenant_id":"acme-corp","model_type":"forecast","config":{"random_seed":' + b"9" * 5000 + b"}}",
        400,
        "body",
    ),
    (
        "deep array",
        "/ai/training/jobs",
        b'{"tenant_id":"acme-corp","config":{"hyperparameters":{"a":' + b"[" * 1000 + b"]" * 1000 + b"}}}",
        400,
        "body",
    ),
    (
        "Infinity",
        "/ai/training/jobs",
        json.dumps(body(**{"config.hyperparameters": {"learning_rate": float("inf")}})).encode(),
        400,
        "hyperparameters.learning_rate",
    ),
    (
        "NaN",
        "/ai/training/validate",
        json.dumps({"config": {**tiny_config(), **hp(learning_rate=float("nan"))}}).encode(),
        200,
        "hyperparameters.learning_rate",
    ),
    ("model_type 7", "/ai/training/jobs", body(**{"config.model_type": 7}), 400, "config.model_type"),
    ("model_type -1", "/ai/training/jobs", body(**{"config.model_type": -1}), 400, "config.model_type"),
    ("long algorithm", "/ai/training/jobs", body(**{"config.algorithm": LONG}), 400, "algorithm"),
    ("fractional priority", "/ai/training/jobs", body(priority=1.5), 400, "priority"),
    ("boolean priority", "/ai/training/jobs", body(priority=True), 400, "priority"),
    (
        "huge mlp",
        "/ai/training/validate",
        {"config": {**tiny_config(algorithm="mlp"), **hp(hidden_sizes=[4096] * 17)}},
        200,
        "hyperparameters.hidden_sizes",
    ),
    (
        "wide mlp",
        "/ai/training/validate",
        {"config": {**tiny_config(algorithm="mlp"), **hp(hidden_sizes=[4096, 4096, 4096])}},
        200,
        "hyperparameters.hidden_sizes",
    ),
    (
        "long lookback",
        "/ai/training/validate",
        {"config": {**tiny_config(algorithm="lstm"), **hp(lookback=2000)}},
        200,
        "hyperparameters.lookback",
    ),
    ("many features", "/ai/training/validate", {"config": {**tiny_config(), "features": [f"f{i}" for i in range(500)]}}, 200, "features"),
    ("control characters", "/ai/training/validate", {"config": {**tiny_config(), "target": "lo\x07ad"}}, 200, "target"),
]
# Webhook targets an attacker would aim inward (server-side request forgery): each is a 400
# naming url. Loopback, private, link-local and metadata addresses, the ranges Python's
# ipaddress gets wrong (CGNAT and its metadata address, benchmarking, IETF), IPv4-mapped and
# NAT64 IPv6, other schemes, credentials, and URLs that do not parse.
SSRF_URLS = [
    "http://127.0.0.1:5432/",
    "http://localhost/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://198.18.0.1/",
    "http://192.0.0.1/",
    "http://[::1]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://2130706433/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:pass@example.com/",
    "http://[::1/",
    "http://",
]
CASES += [(f"ssrf {url}", "/ai/training/alerts/targets", {"tenant_id": "acme-corp", "url": url}, 400, "url") for url in SSRF_URLS]


@pytest.mark.parametrize(("name", "path", "payload", "status", "field"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_values_are_4xx_naming_the_field(stack, name, path, payload, status, field):
    rest, _ = stack
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    resp = await asyncio.to_thread(requests.post, rest + path, data=data, timeout=30)
    assert resp.status_code == status, f"{name}: {resp.status_code} {resp.text[:300]}"
    fields = _fields(resp) if status != 200 else [v["field"] for v in resp.json()["violations"]]
    assert any(f == field or f.endswith(field) for f in fields), f"{name}: {fields} {resp.text[:300]}"
    assert len(resp.content) < 4000, f"{name}: the error is {len(resp.content)} bytes long"
    for internal in ("Traceback", "OverflowError", "asyncpg", "SQLSTATE 2", "sqlalchemy", "psycopg", "ValueError:"):
        assert internal not in resp.text, f"{name}: {resp.text[:300]}"


async def test_oversized_bodies_are_refused_by_envoy(stack):
    rest, _ = stack
    big = json.dumps(body(metadata={"k": "v" * (20 * 1024 * 1024)}))
    resp = await asyncio.to_thread(requests.post, rest + "/ai/training/jobs", data=big, timeout=60)
    assert resp.status_code == 413
    listing = await asyncio.to_thread(requests.get, rest + "/ai/training/jobs", params={"tenant_id": "acme-corp"}, timeout=30)
    assert listing.status_code == 200 and len(listing.content) < 100_000


async def test_an_unexpected_error_is_a_generic_500_with_an_error_id_in_the_log(caplog):
    from server.api.errors import to_status

    with caplog.at_level("ERROR", logger="server.api.errors"):
        status = to_status(RuntimeError("SELECT secret FROM training_jobs: relation details"))
    assert status.code == 13 and "secret" not in status.message and "RuntimeError" not in status.message
    error_id = status.message.split("error id ")[1].split(";")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)


# --- the fuzz ---------------------------------------------------------------------------------
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    [
        "",
        "acme-corp",
        "lgbm",
        "mlp",
        "lstm",
        "forecast",
        "anomaly",
        "2024-03-01T00:00:00",
        "9999-12-31T23:59:59-01:00",
        "x" * 3000,
        "../x",
        "\x00",
    ]
)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, -1, 7, 0.5, 1.5])
)
scalars = st.none() | st.booleans() | numbers | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5), max_leaves=20)
config_keys = st.sampled_from(
    ["algorithm", "model_type", "hyperparameters", "training_start", "training_end", "features", "target", "validation_split",
     "random_seed", "early_stopping_rounds", "feature_table", "label_column", "backtest", "training_options", "ray_config", "distributed",
     "forecast_horizon_hours", "known_ahead", "horizons", "holidays", "data_checks", "preprocessor"]
)  # fmt: skip
configs = st.dictionaries(config_keys, json_values, max_size=8).map(lambda c: {**tiny_config(), **c}) | st.dictionaries(
    config_keys, json_values, max_size=6
)
create_bodies = st.fixed_dictionaries(
    {},
    optional={
        "tenant_id": text,
        "model_type": json_values,
        "config": configs | json_values,
        "priority": json_values,
        "metadata": st.dictionaries(text, text, max_size=4) | json_values,
        "request_id": text,
    },
)
raw_files = st.binary(max_size=300) | st.builds(
    lambda cols, rows: (",".join(cols) + "\n" + "\n".join(",".join(r) for r in rows)).encode(),
    st.lists(st.sampled_from(["timestamp", "load", "x", "Bad Name", "tenant_id", "series_id", "é", ""]), min_size=1, max_size=4),
    st.lists(st.lists(st.sampled_from(["2024-01-01T00:00:00", "1", "nan", "abc", "", "1e400", "-"]), min_size=1, max_size=4), max_size=5),
)
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
FUZZ_MODELS = settings(FUZZ, max_examples=100)  # the models-in-use bodies (forecast, detect, aliases)
rows = st.lists(
    st.dictionaries(st.sampled_from(["timestamp", "series_id", "temperature", "load", "Bad Col", "x" * 70]), json_values, max_size=4)
    | json_values,
    max_size=4,
)
forecast_bodies = st.fixed_dictionaries(
    {},
    optional={
        "tenant_id": text,
        "model_type": json_values,
        "alias": text,
        "origin": text | json_values,
        "horizon_hours": numbers | json_values,
        "series": st.lists(text, max_size=3) | text | json_values,
        "inputs": rows,
    },
)
detect_bodies = st.fixed_dictionaries(
    {}, optional={"tenant_id": text, "start": text | json_values, "end": text | json_values, "rows": rows}
)


def _rest_fuzz(rest: str, job_id: str, seen: Counter) -> None:
    def post(path: str, payload, **kwargs) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        resp = requests.post(rest + path, data=data, timeout=30, **kwargs)
        seen[resp.status_code] += 1
        assert resp.status_code < 500, f"POST {path} {data[:300]!r}: {resp.status_code} {resp.text[:300]}"

    @FUZZ
    @given(create_bodies)
    def create(b):
        post("/ai/training/jobs", b)

    @FUZZ
    @given(st.fixed_dictionaries({}, optional={"config": configs | json_values}))
    def validate(b):
        post("/ai/training/validate", b)

    @FUZZ
    @given(
        st.dictionaries(st.sampled_from(["priority", "job_id", "x"]), json_values, max_size=2), st.sampled_from([job_id, "nope", "0" * 36])
    )
    def update(b, target):
        resp = requests.patch(f"{rest}/ai/training/jobs/{target}", data=json.dumps(b), timeout=30)
        seen[resp.status_code] += 1
        assert resp.status_code < 500, f"PATCH {b!r}: {resp.status_code} {resp.text[:300]}"

    @FUZZ
    @given(
        raw_files,
        st.sampled_from(["load_forecasting", "fuzz_table", "Bad", "x" * 70]),
        st.sampled_from(["acme-corp", "fuzz", "", "Bad Tenant"]),
    )
    def import_(data, table, tenant):
        post(f"/ai/training/features/{table}", data, params={"tenant_id": tenant}, headers={"Content-Type": "text/csv"})

    @FUZZ_MODELS
    @given(
        forecast_bodies,
        st.sampled_from(
            [
                "/ai/training/models:forecast",
                "/ai/training/models/nope:forecast",
                f"/ai/training/models/{'0' * 8}-0000-0000-0000-{'0' * 12}:forecast",
            ]
        ),
    )
    def forecast(b, path):
        post(path, b)

    @FUZZ_MODELS
    @given(detect_bodies, st.sampled_from(["nope", f"{'0' * 8}-0000-0000-0000-{'0' * 12}"]))
    def detect(b, model):
        post(f"/ai/training/models/{model}:detect", b)

    @FUZZ_MODELS
    @given(
        st.sampled_from(["production", "Bad Alias", "x" * 70, "%00", "..", "a"]),
        st.dictionaries(st.sampled_from(["reason", "x"]), json_values, max_size=2),
    )
    def alias(name, b):
        resp = requests.put(f"{rest}/ai/training/models/{'0' * 8}-0000-0000-0000-{'0' * 12}/aliases/{name}", data=json.dumps(b), timeout=30)
        seen[resp.status_code] += 1
        assert resp.status_code < 500, f"PUT alias {name!r} {b!r}: {resp.status_code} {resp.text[:300]}"
        resp = requests.delete(
            f"{rest}/ai/training/aliases/{name}", params={"tenant_id": "acme-corp", "model_type": str(b)[:20]}, timeout=30
        )
        seen[resp.status_code] += 1
        assert resp.status_code < 500, f"DELETE alias {name!r}: {resp.status_code} {resp.text[:300]}"

    for run in (create, validate, update, import_, forecast, detect, alias):
        run()


def _grpc_fuzz(port: int, job_id: str, seen: Counter) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.TrainingServiceStub(channel)
    int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)

    def call(method, request):
        try:
            method(request, timeout=30)
            seen["OK"] += 1
        except grpc.RpcError as exc:
            seen[exc.code().name] += 1
            assert exc.code() not in BAD_GRPC, f"{request!r:.300}: {exc.code()} {exc.details()[:300]}"

    def struct(value) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        try:
            out.update(value if isinstance(value, dict) else {"v": value})
        except (ValueError, TypeError):
            pass
        return out

    def config(c) -> pb.TrainingConfig:
        msg = pb.TrainingConfig()
        if not isinstance(c, dict):
            return msg
        for key in ("algorithm", "training_start", "training_end", "target", "feature_table", "label_column"):
            if isinstance(c.get(key), str):
                setattr(msg, key, c[key])
        if isinstance(c.get("features"), list):
            msg.features.extend(str(f) for f in c["features"])
        if isinstance(c.get("hyperparameters"), dict | list | int | float | str):
            msg.hyperparameters.CopyFrom(struct(c["hyperparameters"]))
        if isinstance(c.get("model_type"), int) and not isinstance(c["model_type"], bool) and -(2**31) <= c["model_type"] < 2**31:
            msg.model_type = c["model_type"]
        return msg

    @FUZZ
    @given(configs | json_values, text, int32, int32, st.dictionaries(text, text, max_size=3), text)
    def create(c, tenant, model_type, priority, metadata, request_id):
        request = pb.CreateTrainingJobRequest(tenant_id=tenant, config=config(c), metadata=metadata, request_id=request_id)
        request.model_type, request.priority = model_type, priority
        call(stub.CreateTrainingJob, request)

    @FUZZ
    @given(configs | json_values)
    def validate(c):
        call(stub.ValidateTrainingConfig, pb.ValidateTrainingConfigRequest(config=config(c)))

    @FUZZ
    @given(st.sampled_from([job_id, "nope", ""]) | text, int32)
    def update(target, priority):
        request = pb.UpdateTrainingJobRequest(job_id=target)
        request.priority = priority
        call(stub.UpdateTrainingJob, request)

    @FUZZ
    @given(st.lists(raw_files, min_size=1, max_size=3), text, text, int32)
    def import_(chunks, tenant, table, fmt):
        first = pb.ImportFeatureDataRequest(tenant_id=tenant, table=table, data=chunks[0])
        first.format = fmt
        call(stub.ImportFeatureData, iter([first, *(pb.ImportFeatureDataRequest(data=c) for c in chunks[1:])]))

    @FUZZ_MODELS
    @given(text, text, int32, text, text, int32, st.lists(text, max_size=3), rows)
    def forecast(model_id, tenant, model_type, alias, origin, horizon, series, inputs):
        request = pb.ForecastModelVersionRequest(model_id=model_id, tenant_id=tenant, alias=alias, origin=origin, series=series)
        request.model_type, request.horizon_hours = model_type, horizon
        for row in inputs:
            request.inputs.add().CopyFrom(struct(row))
        call(stub.ForecastModelVersion, request)

    @FUZZ_MODELS
    @given(text, text, text, rows)
    def detect(model_id, start, end, given_rows):
        request = pb.DetectModelVersionRequest(model_id=model_id, start=start, end=end)
        for row in given_rows:
            request.rows.add().CopyFrom(struct(row))
        call(stub.DetectModelVersion, request)

    @FUZZ_MODELS
    @given(text, text, text, text)
    def alias(model_id, name, tenant, reason):
        call(stub.SetModelAlias, pb.SetModelAliasRequest(model_id=model_id, alias=name, tenant_id=tenant, reason=reason))
        call(stub.DeleteModelAlias, pb.DeleteModelAliasRequest(alias=name, tenant_id=tenant, model_type=reason[:10], reason=reason))
        call(stub.ListModelAliases, pb.ListModelAliasesRequest(tenant_id=tenant, model_type=name[:10]))

    try:
        for run in (create, validate, update, import_, forecast, detect, alias):
            run()
    finally:
        channel.close()


async def test_fuzzed_requests_get_only_2xx_or_4xx_and_the_server_stays_healthy(stack):
    rest, port = stack
    created = await asyncio.to_thread(requests.post, rest + "/ai/training/jobs", data=json.dumps(body()), timeout=30)
    job_id = created.json()["job_id"]
    rest_seen: Counter = Counter()
    grpc_seen: Counter = Counter()
    await asyncio.to_thread(_rest_fuzz, rest, job_id, rest_seen)
    await asyncio.to_thread(_grpc_fuzz, port, job_id, grpc_seen)
    health = await asyncio.to_thread(requests.get, rest + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["database"]["status"] == "ok"
    # The fuzz reached past the boundary: some requests were valid, most were refused.
    assert rest_seen[200] > 0 and rest_seen[400] > 0 and grpc_seen["INVALID_ARGUMENT"] > 0
    print(f"\nREST fuzz by status: {dict(sorted(rest_seen.items()))}\ngRPC fuzz by status: {dict(sorted(grpc_seen.items()))}")


async def test_envoy_drops_a_connection_that_never_finishes_its_headers(stack):
    import socket
    import time
    from urllib.parse import urlparse

    rest, _ = stack
    url = urlparse(rest)

    def slow_client() -> tuple[float, bytes]:
        with socket.create_connection((url.hostname, url.port), timeout=30) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # the headers never end
            t0 = time.monotonic()
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            return time.monotonic() - t0, answer

    waited, answer = await asyncio.to_thread(slow_client)
    assert waited < 20, f"the connection stayed open {waited:.0f} s"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
