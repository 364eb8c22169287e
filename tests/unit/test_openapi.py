"""The OpenAPI description of the REST face (client/_gen/openapi.json, made by
scripts/gen_protos.py with scripts/openapi.py; test_tooling's stub test keeps it current):
valid OpenAPI 3.1, one operation per google.api.http rule, bodies, query parameters, the
guide's error body and the bearer scheme."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from google.api import annotations_pb2
from openapi_spec_validator import validate

from client._gen.aihub.training.v1 import operations_pb2, training_http_pb2, training_service_pb2
from tests.conftest import QUICK_START_CONFIG, ROOT

SPEC = json.loads((ROOT / "client" / "_gen" / "openapi.json").read_text())


def _rules() -> set[tuple[str, str]]:
    """Every (method, path) of the services Envoy transcodes (envoy.yaml)."""
    envoy = yaml.safe_load((ROOT / "envoy.yaml").read_text())
    listener = envoy["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    services = next(f for f in filters if f["name"] == "envoy.filters.http.grpc_json_transcoder")["typed_config"]["services"]
    found = set()
    for module in (training_service_pb2, training_http_pb2, operations_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name not in services:
                continue
            for method in service.methods:
                top = method.GetOptions().Extensions[annotations_pb2.http]
                for rule in (top, *top.additional_bindings):
                    verb = rule.WhichOneof("pattern")
                    if verb:
                        found.add((verb, getattr(rule, verb)))
    return found


def test_the_description_is_valid_openapi_3_1():
    validate(SPEC)
    assert SPEC["openapi"] == "3.1.0"


def test_every_transcoded_route_is_described_and_nothing_else():
    described = {(method, path) for path, methods in SPEC["paths"].items() for method in methods}
    assert described == _rules()
    assert ("post", "/ai/training/jobs") in described and ("get", "/health") in described


def test_bodies_query_parameters_errors_and_the_bearer_scheme():
    jobs = SPEC["paths"]["/ai/training/jobs"]
    listed = {p["name"] for p in jobs["get"]["parameters"]}
    assert {"tenant_id", "status", "model_type", "page_size", "page_token"} <= listed
    body = jobs["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/CreateTrainingJobRequest"} in body["oneOf"]
    patch = SPEC["paths"]["/ai/training/jobs/{job_id}"]["patch"]
    assert set(patch["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"priority"}  # job_id is the path's
    assert [p["name"] for p in patch["parameters"]] == ["job_id"] and patch["parameters"][0]["in"] == "path"
    imported = SPEC["paths"]["/ai/training/features/{table}"]["post"]
    assert "text/csv" in imported["requestBody"]["content"] and "tenant_id" in {p["name"] for p in imported["parameters"]}
    for path, methods in SPEC["paths"].items():
        for method, op in methods.items():
            assert op["responses"]["default"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, path
            assert op.get("summary"), (method, path)
    assert SPEC["components"]["schemas"]["Error"]["required"] == ["error", "message", "details"]
    assert SPEC["components"]["securitySchemes"]["bearerAuth"] == {
        **SPEC["components"]["securitySchemes"]["bearerAuth"],
        "scheme": "bearer",
    }
    assert SPEC["security"] == [{"bearerAuth": []}] and SPEC["paths"]["/health"]["get"]["security"] == []


def _schema(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}


def test_the_guides_own_body_is_valid_and_a_misspelt_field_is_not():
    guide = {"tenant_id": "acme-corp", "model_type": "forecast", "priority": "high", "config": QUICK_START_CONFIG,
             "metadata": {"owner": "data-science-team"}}  # fmt: skip
    jsonschema.validate(guide, _schema("CreateTrainingJobRequest"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**guide, "config": {**QUICK_START_CONFIG, "validaton_split": 0.2}}, _schema("CreateTrainingJobRequest"))
    assert "HIGH" in SPEC["components"]["schemas"]["Priority"]["enum"] and "high" in SPEC["components"]["schemas"]["Priority"]["enum"]
