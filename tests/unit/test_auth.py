"""Identity and the request boundary, without a server: who a request acts for, what the
settings refuse, artifact paths, and the shape checks every config passes first."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from server.api import auth
from server.api.errors import PermissionDenied, RequestError, Unauthenticated
from server.execution.artifacts import ArtifactPathError, ArtifactStore
from server.settings import Settings
from storage.errors import InvalidTenantId
from storage.tenancy import Scope, check_tenant_id, feature_schema
from trainers.spec import validate

ROOT = Path(__file__).resolve().parents[2]


METHOD = "/aihub.training.v1.TrainingService/GetTrainingJob"


def as_caller(principal: auth.Principal) -> None:
    auth.bind(principal, METHOD)


async def as_open_caller() -> None:
    """What the interceptor binds for a call without a key on a server with authentication off."""
    await auth.Authenticator(None, required=False)((), METHOD)  # type: ignore[arg-type] - no key, no lookup


def test_a_tenant_key_acts_for_its_tenant_only():
    as_caller(auth.Principal("k1", "acme-corp", admin=False))
    assert auth.scope_for("") == Scope.of("acme-corp")
    assert auth.scope_for("acme-corp") == Scope.of("acme-corp")
    with pytest.raises(PermissionDenied, match="globex"):
        auth.scope_for("globex")
    with pytest.raises(PermissionDenied):
        auth.require_operator()


def test_an_admin_key_acts_for_any_tenant_and_is_audited(caplog):
    as_caller(auth.Principal("k0", None, admin=True))
    with caplog.at_level("INFO", logger="aihub.audit"):
        assert auth.scope_for("") == Scope.ALL
        assert auth.scope_for("globex") == Scope.of("globex")
    assert [r.getMessage() for r in caplog.records] == [
        "admin key k0: GetTrainingJob for every tenant",
        "admin key k0: GetTrainingJob for tenant globex",
    ]
    with pytest.raises(RequestError):
        auth.scope_for("", required=True)


async def test_without_a_key_only_an_open_server_answers():
    await as_open_caller()
    assert auth.scope_for("acme-corp") == Scope.of("acme-corp") and auth.scope_for("") == Scope.ALL
    as_caller(auth.ANONYMOUS)
    with pytest.raises(Unauthenticated):
        auth.scope_for("acme-corp")


@pytest.mark.parametrize("tenant", ["../../../../tmp/x", "/tmp/x", "evil/../acme-corp", "Acme", "a b", "a\x00b", "", "-x", "x" * 64, "ü"])
async def test_tenant_ids_are_slugs(tenant):
    with pytest.raises(InvalidTenantId):
        check_tenant_id(tenant)
    await as_open_caller()
    with pytest.raises((InvalidTenantId, RequestError)):
        auth.scope_for(tenant, required=True)


def test_outside_a_request_the_caller_is_nobody_and_only_an_authenticator_binds_open():
    fresh = contextvars.Context()
    assert fresh.run(auth.current) is auth.ANONYMOUS
    with pytest.raises(Unauthenticated):
        fresh.run(auth.scope_for, "acme-corp")
    with pytest.raises(ValueError, match="open principal"):
        auth.bind(auth.LOCAL, METHOD)


async def test_a_required_server_binds_nobody_for_a_call_without_a_key():
    authenticator = auth.Authenticator(None, required=True)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        await authenticator((), METHOD)
    await authenticator((), "/aihub.training.v1.TrainingService/GetHealth")
    assert auth.current() is auth.ANONYMOUS


def test_feature_schemas_are_distinct_names_within_postgresqls_limit():
    names = {feature_schema(t) for t in ("a-b", "a_b", "ab", "x" * 63, "x" * 62 + "y")}
    assert len(names) == 5 and max(len(n) for n in names) <= 63


@pytest.mark.parametrize("tenant", ["../../../../../../../../tmp/x", "/tmp/x", "evil/../acme-corp", "..", "a\\b"])
def test_artifact_paths_never_leave_the_root(tmp_path, tenant):
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ArtifactPathError):
        store.create_attempt_folder(tenant, "forecast", uuid.uuid4(), 1)
    with pytest.raises(ArtifactPathError):
        store.model_file((tmp_path / "elsewhere" / "model.txt").as_uri())
    assert not (tmp_path / "elsewhere").exists() and list((tmp_path / "artifacts").rglob("*")) == []


def test_bearer_metadata_is_parsed_strictly():
    assert auth._bearer([("authorization", "Bearer abc")]) == "abc"
    assert auth._bearer([("x", "y")]) is None
    for bad in ("abc", "Basic abc", "Bearer ", "Bearer " + "x" * 300):
        with pytest.raises(Unauthenticated):
            auth._bearer([("authorization", bad)])


def test_keys_are_random_and_stored_as_hashes():
    (id1, k1), (id2, k2) = auth.new_key(), auth.new_key()
    assert id1 != id2 and k1 != k2 and k1.startswith(auth.KEY_PREFIX + id1)
    assert auth.hash_key(k1) != k1 and len(auth.hash_key(k1)) == 64


def test_auth_off_is_refused_on_a_non_loopback_address():
    with pytest.raises(ValueError, match="loopback"):
        Settings(_env_file=None, auth="off", grpc_host="192.0.2.1")  # a documentation address (TEST-NET-1)
    with pytest.raises(ValueError, match="loopback"):
        Settings(_env_file=None, auth="off", http_host="10.1.2.3")
    assert Settings(_env_file=None, auth="off", grpc_host="::1", http_host="localhost").auth == "off"
    assert Settings(_env_file=None, auth="required", grpc_host="192.0.2.1").auth == "required"
    with pytest.raises(ValueError, match="32 characters"):
        Settings(_env_file=None, bootstrap_admin_key="short")


def test_the_server_refuses_to_start_with_auth_off_on_a_non_loopback_address(tmp_path):
    # The settings are refused before anything is started or bound; the server runs inside a
    # network namespace of its own all the same (no interface but its own loopback).
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unshare -rn here: the refusal is not run outside a private network namespace")
    env = {**os.environ, "AIHUB_AUTH": "off", "AIHUB_GRPC_HOST": "192.0.2.1", "AIHUB_DATA_DIR": str(tmp_path)}
    command = ["unshare", "-rn", sys.executable, "-m", "server"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "AIHUB_AUTH=off is allowed only when every listener is on loopback" in result.stderr
    assert not (tmp_path / "postgres").exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"algorithm": "x" * 20_000}, "algorithm"),
        ({"hyperparameters": {"learning_rate": float("inf")}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"n_estimators": 10**100}}, "hyperparameters.n_estimators"),
        ({"hyperparameters": {"a": [[[[[[[[1]]]]]]]]}}, "hyperparameters.a[0][0][0][0][0]"),
        ({"features": ["f"] * 500}, "features"),
        ({"target": "lo\x00ad"}, "target"),
        ({"training_end": "9999-12-31T23:59:59-01:00"}, "training_end"),
        ({"algorithm": "mlp", "hyperparameters": {"hidden_sizes": [4096] * 3}}, "hyperparameters.hidden_sizes"),
        ({"algorithm": "lgbm", "hyperparameters": {"n_estimators": 100_000, "num_leaves": 4096}}, "hyperparameters.n_estimators"),
    ],
)
def test_unsafe_configs_name_the_field(changes, field):
    from tests.conftest import tiny_config

    violations = validate(tiny_config(**changes), model_type="forecast")
    assert any(v.field == field for v in violations), violations
    assert all(len(v.description) < 300 for v in violations)
