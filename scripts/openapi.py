"""OpenAPI 3.1 for the REST face, from the protos: every ``google.api.http`` rule of the
services Envoy transcodes (envoy.yaml), with its path and query parameters, body, answer,
the guide's error body and the bearer scheme; descriptions are the protos' comments.

Written by scripts/gen_protos.py next to the stubs (client/_gen/openapi.json), served by
Envoy at /openapi.json and rendered at /docs. Why our own: the generators that read
``google.api.http`` (gnostic's protoc-gen-openapi, grpc-gateway's protoc-gen-openapiv2,
protoc-gen-connect-openapi) are Go programs none of our registries carries (Debian's
grpc-gateway is v1 and writes Swagger 2.0), and none knows our ``TrainingHttpService``:
routes whose ``google.api.HttpBody`` carries the JSON of a typed request (strict parsing),
which this describes by that typed request (the method of the same name without ``Http``).

    python scripts/openapi.py OUT.json   # alone; gen_protos.py calls build() itself
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

PACKAGE = "aihub.training.v1"
SERVICES = ("TrainingService", "TrainingHttpService", "OperationsService")  # those envoy.yaml transcodes
HTTP_SERVICE = "TrainingHttpService"
REF = "#/components/schemas/"
T = descriptor_pb2.FieldDescriptorProto

SCALARS: dict[int, dict[str, Any]] = {
    T.TYPE_DOUBLE: {"type": "number"},
    T.TYPE_FLOAT: {"type": "number"},
    T.TYPE_INT32: {"type": "integer", "format": "int32"},
    T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    T.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    T.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # 64-bit integers are strings in protobuf's JSON (numbers are accepted too).
    T.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    T.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    T.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    T.TYPE_UINT64: {"type": ["string", "integer"], "format": "int64"},
    T.TYPE_FIXED64: {"type": ["string", "integer"], "format": "int64"},
    T.TYPE_BOOL: {"type": "boolean"},
    T.TYPE_STRING: {"type": "string"},
    T.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.DoubleValue": {"type": "number"},
    ".google.protobuf.Int32Value": {"type": "integer"},
    ".google.protobuf.BoolValue": {"type": "boolean"},
    ".google.protobuf.StringValue": {"type": "string"},
}
ERROR = {
    "type": "object",
    "description": "Every REST error: the guide's error name, a message, and details with the guide's keys "
    "(field/error/violations for a bad request, reason/tenant_id/table for missing data, the id for not found).",
    "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string", "examples": ["ConfigValidationError", "DataLoadError", "JobNotFound", "QuotaExceeded"]},
        "message": {"type": "string"},
        "details": {
            "type": "object",
            "additionalProperties": True,
            "properties": {
                "field": {"type": "string"},
                "error": {"type": "string"},
                "violations": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"field": {"type": "string"}, "error": {"type": "string"}}},
                },
            },
        },
        "code": {"type": "integer", "description": "The gRPC status code."},
    },
}
P = f".{PACKAGE}."
# Answers of the HttpBody routes (their JSON is written by server/api/rest.py): "$" + a type
# name stands for that message's schema.
HTTP_ANSWERS: dict[str, Any] = {
    "CreateTrainingJobHttp": {"oneOf": [f"${P}TrainingJob", f"${P}Schedule"]},
    "GetTrainingJobMetricsHttp": {"type": "object", "additionalProperties": {"type": "number"}, "description": "metric name → value"},
    "ListRayClustersHttp": {"type": "array", "items": f"${P}RayCluster"},
    "DetectModelVersionHttp": {
        "oneOf": [f"${P}DetectModelVersionResponse"],
        "description": "series_id only for a table of several series.",
    },
    "ForecastModelVersionHttp": {
        "oneOf": [f"${P}ForecastModelVersionResponse"],
        "description": "JSON; with ?format=csv or ?format=parquet the points as a file (timestamp, series_id, forecast, origin).",
    },
}
# The operation ids of additional bindings (the same call by another path).
OTHER_BINDINGS = {"/ai/training/models:forecast": "ForecastModelVersionByAlias"}
# Bodies that are not the counterpart's request alone (raw: a file, not JSON).
HTTP_BODIES: dict[str, Any] = {
    "CreateTrainingJobHttp": {
        "oneOf": [f"${P}CreateTrainingJobRequest", f"${P}CreateScheduleRequest"],
        "description": "The guide's job body; with `schedule` (a cron expression) it creates a schedule instead.",
    },
    "ImportFeatureDataHttp": {"raw": True},
}


def _comments(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[tuple[str, tuple[int, ...]], str]:
    out = {}
    for f in files:
        for loc in f.source_code_info.location:
            text = " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
            if text:
                out[(f.name, tuple(loc.path))] = text
    return out


class _Spec:
    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.comments = _comments(files)
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str, tuple[int, ...]]] = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, str, tuple[int, ...]]] = {}
        self.services: dict[str, tuple[descriptor_pb2.ServiceDescriptorProto, str, tuple[int, ...]]] = {}
        for f in files:
            for i, m in enumerate(f.message_type):
                self._message(f"{f.package}.{m.name}", m, f.name, (4, i))
            for i, e in enumerate(f.enum_type):
                self.enums[f".{f.package}.{e.name}"] = (e, f.name, (5, i))
            for i, s in enumerate(f.service):
                self.services[f"{f.package}.{s.name}"] = (s, f.name, (6, i))
        self.schemas: dict[str, Any] = {"Error": ERROR}

    def _message(self, name: str, m: descriptor_pb2.DescriptorProto, file: str, path: tuple[int, ...]) -> None:
        self.messages[f".{name}"] = (m, file, path)
        for i, nested in enumerate(m.nested_type):
            self._message(f"{name}.{nested.name}", nested, file, (*path, 3, i))
        for i, e in enumerate(m.enum_type):
            self.enums[f".{name}.{e.name}"] = (e, file, (*path, 4, i))

    def resolve(self, template: Any) -> Any:
        """A schema template with "$.type.Name" strings made into that type's schema."""
        if isinstance(template, str) and template.startswith("$."):
            return self.ref(template[1:])
        if isinstance(template, dict):
            return {k: self.resolve(v) for k, v in template.items()}
        if isinstance(template, list):
            return [self.resolve(v) for v in template]
        return template

    def describe(self, file: str, path: tuple[int, ...]) -> dict[str, str]:
        text = self.comments.get((file, path))
        return {"description": text} if text else {}

    def ref(self, type_name: str) -> dict[str, Any]:
        """A schema for a message or enum type: a $ref to components (made on first use)."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        ours = f".{PACKAGE}."
        short = (type_name[len(ours) :] if type_name.startswith(ours) else type_name.strip(".")).replace(".", "_")
        if short not in self.schemas:
            self.schemas[short] = {}  # a placeholder first: messages may refer to themselves
            self.schemas[short] = self._enum(type_name) if type_name in self.enums else self._object(type_name)
        return {"$ref": REF + short}

    def _enum(self, type_name: str) -> dict[str, Any]:
        e, file, path = self.enums[type_name]
        # Answered upper-case; accepted in any case (the guide writes "high", "forecast").
        values = [v.name for v in e.value]
        values += [v.lower() for v in values if not v.endswith("_UNSPECIFIED") and v.lower() != v]
        return {"type": "string", "enum": values, **self.describe(file, path)}

    def field_schema(self, fd: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if fd.type in (T.TYPE_MESSAGE, T.TYPE_ENUM):
            entry = self.messages.get(fd.type_name)
            if entry is not None and entry[0].options.map_entry:
                value = next(f for f in entry[0].field if f.name == "value")
                return {"type": "object", "additionalProperties": self.field_schema(value)}
            one = self.ref(fd.type_name)
        else:
            one = dict(SCALARS[fd.type])
        return {"type": "array", "items": one} if fd.label == T.LABEL_REPEATED else one

    def _object(self, type_name: str, *, without: frozenset[str] = frozenset()) -> dict[str, Any]:
        m, file, path = self.messages[type_name]
        properties = {}
        for i, fd in enumerate(m.field):
            if fd.name in without:
                continue
            schema = self.field_schema(fd)
            described = self.describe(file, (*path, 2, i))
            properties[fd.name] = {"allOf": [schema], **described} if "$ref" in schema and described else {**schema, **described}
        return {"type": "object", "properties": properties, "additionalProperties": False, **self.describe(file, path)}

    def method(self, service: str, name: str) -> descriptor_pb2.MethodDescriptorProto | None:
        s = self.services[f"{PACKAGE}.{service}"][0]
        return next((m for m in s.method if m.name == name), None)

    def method_comment(self, method: descriptor_pb2.MethodDescriptorProto) -> str:
        for s, file, path in self.services.values():
            for i, m in enumerate(s.method):
                if m is method:
                    return self.comments.get((file, (*path, 2, i)), "")
        return ""

    def counterpart(self, name: str) -> descriptor_pb2.MethodDescriptorProto:
        """The typed method an HTTP-face method stands for (CreateScheduleHttp -> CreateSchedule)."""
        for service in (*SERVICES, "AdminService"):  # AdminService: only its audit trail has a REST path
            if service != HTTP_SERVICE and (found := self.method(service, name.removesuffix("Http"))) is not None:
                return found
        raise LookupError(f"{name}: no typed method {name.removesuffix('Http')}")


def _query_parameters(spec: _Spec, type_name: str, skip: set[str]) -> list[dict[str, Any]]:
    m, file, path = spec.messages[type_name]
    out = []
    for i, fd in enumerate(m.field):
        if fd.name in skip or (fd.type == T.TYPE_MESSAGE and fd.type_name not in WELL_KNOWN):
            continue
        out.append(
            {"name": fd.name, "in": "query", "required": False, "schema": spec.field_schema(fd), **spec.describe(file, (*path, 2, i))}
        )
    return out


def _operation(spec: _Spec, service: str, index: int, m: descriptor_pb2.MethodDescriptorProto, verb: str, path: str, body: str):
    s_file, s_path = spec.services[f"{PACKAGE}.{service}"][1:]
    in_path = re.findall(r"{([^}=]+)", path)
    http = service == HTTP_SERVICE
    typed = spec.counterpart(m.name) if http else m
    said = [spec.method_comment(typed), spec.comments.get((s_file, (*s_path, 2, index)), "") if http else ""]
    text = " ".join(t for t in said if t)
    op: dict[str, Any] = {
        "operationId": m.name.removesuffix("Http"),
        "tags": [_tag(path)],
        **({"summary": text.split(". ")[0].rstrip("."), "description": text} if text else {}),
    }
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in in_path]
    if body == "":
        params += _query_parameters(spec, m.input_type, set(in_path))
    elif body == "*":
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec_body(spec, m.input_type, set(in_path))}}}
    elif http and HTTP_BODIES.get(m.name, {}).get("raw"):
        params += _query_parameters(spec, m.input_type, {*in_path, body})
        raw = {"type": "string", "contentMediaType": "application/octet-stream"}
        op["requestBody"] = {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}, "application/octet-stream": {"schema": raw}},
        }
    elif http:
        params += _query_parameters(spec, m.input_type, {*in_path, body})
        schema = spec.resolve(HTTP_BODIES[m.name]) if m.name in HTTP_BODIES else spec_body(spec, typed.input_type, set(in_path))
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if params:
        op["parameters"] = params
    answer = spec.resolve(HTTP_ANSWERS[m.name]) if m.output_type == ".google.api.HttpBody" else spec.ref(m.output_type)
    content_type = "application/json"
    described = "OK"
    if m.server_streaming:
        described = "A stream: one JSON object per line (newline-delimited), until the job is final."
    op["responses"] = {
        "200": {"description": described, "content": {content_type: {"schema": answer}}},
        "default": {"description": "An error, in the guide's shape.", "content": {"application/json": {"schema": {"$ref": REF + "Error"}}}},
    }
    if path == "/health":
        op["security"] = []  # answers without a key
    return op


def spec_body(spec: _Spec, type_name: str, without: set[str]) -> dict[str, Any]:
    """A request message as a body: the message without its path parameters."""
    if not without:
        return spec.ref(type_name)
    return spec._object(type_name, without=frozenset(without))


def _tag(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[:2] != ["ai", "training"]:
        return "service"
    return {"ray": "cluster", "features": "data", "validate": "jobs"}.get(parts[2].split(":")[0], parts[2].split(":")[0])


def build(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    spec = _Spec(files)
    paths: dict[str, dict[str, Any]] = {}
    for service in SERVICES:
        s = spec.services[f"{PACKAGE}.{service}"][0]
        for index, m in enumerate(s.method):
            rule = m.options.Extensions[annotations_pb2.http]
            for n, one in enumerate((rule, *rule.additional_bindings)):
                verb = one.WhichOneof("pattern")
                if verb is None:
                    continue
                path = one.custom.path if verb == "custom" else getattr(one, verb)
                method = one.custom.kind.lower() if verb == "custom" else verb
                op = _operation(spec, service, index, m, method, path, one.body)
                if n:  # an additional binding: the same call by another path, its own operation id
                    op["operationId"] = OTHER_BINDINGS[path]
                paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AI Hub Training",
            "version": "v1",
            "description": "The REST face of aihub.training.v1 (the training pipeline guide's paths), transcoded by Envoy to gRPC. "
            "Enum values are accepted in any case and answered upper-case; field names are snake_case; unknown fields are refused.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(spec.schemas.items())),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer aihub_…` (not needed when the server runs with AIHUB_AUTH=off).",
                }
            },
        },
    }


def descriptors(proto_root: Path, includes: list[str], protos: list[str]) -> list[descriptor_pb2.FileDescriptorProto]:
    """Our protos and what they import, with their comments (source info)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "with-comments.pb"
        args = ["protoc", *includes, "--include_imports", "--include_source_info", f"--descriptor_set_out={out}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc (descriptor set with comments) failed")
        return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def write(files: list[descriptor_pb2.FileDescriptorProto], target: Path) -> None:
    target.write_text(json.dumps(build(files), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gen_protos

    write(gen_protos.descriptors_with_comments(), Path(sys.argv[1]))
