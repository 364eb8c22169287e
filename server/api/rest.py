"""TrainingHttpService: the guide's REST paths that need a raw body.

Envoy hands these methods the HTTP body untouched (google.api.HttpBody). JSON bodies are
parsed strictly — an unknown or misspelled field is a 400 naming it, never dropped — into
the typed request of TrainingService, whose handler then answers. Enum values are matched
case-insensitively ("priority": "high"), as the guide writes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, TypeVar

from google.api import httpbody_pb2
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from client._gen.aihub.training.v1 import training_http_pb2 as http_pb
from client._gen.aihub.training.v1 import training_http_pb2_grpc as http_grpc
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.admin import AdminServicer
from server.api.convert import integral
from server.api.convert import serving as convert
from server.api.errors import RequestError, shorten
from server.api.operations import OperationsServicer
from server.api.servicer import TrainingServicer
from trainers.errors import ConfigValidationError, Violation, shown

FREE_FORM = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")
M = TypeVar("M", bound=Message)
MAX_JSON_DEPTH = 12
FORECAST_FIELDS = {
    *("tenant_id", "model_type", "alias", "origin", "horizon_hours", "series", "inputs", "history_hours"),
    *("tenantId", "modelType", "horizonHours", "historyHours"),
}
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet")


def _fields(desc: Any) -> dict[str, descriptor.FieldDescriptor]:
    """A message's fields by proto name and by JSON name (both are accepted)."""
    return {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}


def _unknown_fields(data: Mapping[str, Any], desc: Any, path: str = "") -> Iterator[str]:
    """Paths of keys in ``data`` that ``desc`` has no field for (by proto or JSON name)."""
    fields = _fields(desc)
    for key, value in data.items():
        field = fields.get(key)
        where = f"{path}{key}"
        if field is None:
            yield where
        elif field.message_type is not None and field.message_type.full_name not in FREE_FORM:
            if field.message_type.GetOptions().map_entry:
                continue
            items = value if field.is_repeated and isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, Mapping):
                    yield from _unknown_fields(item, field.message_type, f"{where}.")


def _upper_enums(data: dict[str, Any], desc: Any, path: str = "") -> Iterator[Violation]:
    """ "high" -> "HIGH" for enum fields, in place (the guide writes enum values lower-case);
    yields a violation for each value the enum does not have."""
    fields = _fields(desc)
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            continue
        if field.enum_type is not None and not field.is_repeated:
            names = [v.name for v in field.enum_type.values if not v.name.endswith("_UNSPECIFIED")]
            numbers = {v.number for v in field.enum_type.values}
            # A value named with its enum's prefix (SCHEDULE_ACTION_FORECAST: FORECAST is taken
            # in the package's one scope) is read by its short name too ("forecast").
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", field.enum_type.name).upper() + "_"
            if isinstance(value, str) and value.upper() not in names and prefix + value.upper() in names:
                data[key] = prefix + value.upper()
            elif isinstance(value, str) and value.upper() in names:
                data[key] = value.upper()
            elif isinstance(value, int) and not isinstance(value, bool) and value in numbers:
                continue
            else:
                short = [n.removeprefix(prefix).lower() for n in names]
                yield Violation(f"{path}{key}", f"{shown(value)} is not one of {', '.join(short)}")
        elif (
            field.message_type is not None
            and field.message_type.full_name not in FREE_FORM
            and isinstance(value, dict)
            and not field.message_type.GetOptions().map_entry
        ):
            yield from _upper_enums(value, field.message_type, f"{path}{key}.")


def parse_json(body: httpbody_pb2.HttpBody, message: M, *, allowed: set[str] | None = None) -> M:
    """Fill ``message`` from a JSON body; every unknown field is a violation naming it
    (``allowed``, when given, narrows the top-level fields further)."""
    # Any content type is read as JSON: the guide's own curl lines send JSON with
    # curl's default application/x-www-form-urlencoded.
    if not body.data.strip():
        raise RequestError("body", "is empty: send a JSON object")
    depth = _nesting(body.data)
    if depth > MAX_JSON_DEPTH:
        raise RequestError("body", f"is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        data = json.loads(body.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError("body", f"is not valid JSON: {shorten(str(exc), 120)}") from None
    except (ValueError, RecursionError):  # e.g. an integer of more digits than Python reads
        raise RequestError("body", "holds a number too large to read") from None
    if not isinstance(data, dict):
        raise RequestError("body", "must be a JSON object")
    unknown = list(_unknown_fields(data, message.DESCRIPTOR))
    if allowed is not None:
        unknown += [k for k in data if k not in allowed and k not in unknown]
    if unknown:
        raise ConfigValidationError(
            [Violation(u, "is not a known field (misspelled?)") for u in unknown],
            message=f"Unknown field{'s' if len(unknown) > 1 else ''} in the request body: {', '.join(unknown)}",
        )
    bad_values = list(_upper_enums(data, message.DESCRIPTOR))
    if bad_values:
        raise ConfigValidationError(bad_values, message="Invalid value in the request body")
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RequestError("body", shorten(str(exc), 200)) from None
    return message


def _nesting(data: bytes) -> int:
    """How deeply a JSON text nests objects and arrays (brackets inside strings skipped)."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return data.count(b"[") + data.count(b"{")
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def json_body(value: Any) -> httpbody_pb2.HttpBody:
    """JSON as the transcoder prints the other answers: whole numbers without a fraction
    (``"max_depth": 7``, ``"data_rows": 8784``), as GET shows them."""
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(integral(value)).encode())


def message_body(message: Message) -> httpbody_pb2.HttpBody:
    """A message as the transcoder prints it (envoy.yaml print_options)."""
    return json_body(json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def _one_or_list(body: httpbody_pb2.HttpBody, field: str) -> httpbody_pb2.HttpBody:
    """The body with ``field`` given as one string made a list of it ("series": "meter_1")."""
    if f'"{field}"'.encode() not in body.data:
        return body
    try:
        data = json.loads(body.data)
    except (ValueError, RecursionError):
        return body  # parse_json names the problem
    if isinstance(data, dict) and isinstance(data.get(field), str):
        data[field] = [data[field]]
        return httpbody_pb2.HttpBody(content_type=body.content_type, data=json.dumps(data).encode())
    return body


def _has_schedule(body: httpbody_pb2.HttpBody) -> bool:
    """Whether a create body is the guide's scheduled training ("schedule": a cron)."""
    if b'"schedule"' not in body.data:
        return False
    try:
        data = json.loads(body.data)
    except (ValueError, RecursionError):
        return False  # parse_json names the problem
    return isinstance(data, dict) and "schedule" in data


def _import_format(fmt: pb.DataFormat, content_type: str) -> pb.DataFormat:
    """The format asked for, else the content type's (Parquet's types, or CSV's)."""
    if fmt != pb.DATA_FORMAT_UNSPECIFIED:
        return fmt
    content_type = content_type.lower()
    return pb.PARQUET if any(t in content_type for t in PARQUET_TYPES) else pb.CSV if "csv" in content_type else fmt


class TrainingHttpServicer(http_grpc.TrainingHttpServiceServicer):
    def __init__(self, typed: TrainingServicer, operations: OperationsServicer, admin: AdminServicer) -> None:
        self.typed = typed
        self.operations = operations
        self.admin = admin

    async def ListAuditEventsHttp(self, request, context):
        typed = admin_pb.ListAuditEventsRequest(
            tenant_id=request.tenant_id, action=request.action, page_size=request.page_size, page_token=request.page_token
        )
        return await self.admin.ListAuditEvents(typed, context)

    async def CreateTrainingJobHttp(self, request, context) -> httpbody_pb2.HttpBody:
        if _has_schedule(request.body):
            return message_body(await self.CreateScheduleHttp(request, context))
        return message_body(await self.typed.CreateTrainingJob(parse_json(request.body, pb.CreateTrainingJobRequest()), context))

    async def CreateScheduleHttp(self, request, context) -> ops_pb.Schedule:
        return await self.operations.CreateSchedule(parse_json(request.body, ops_pb.CreateScheduleRequest()), context)

    async def CreateAlertTargetHttp(self, request, context) -> ops_pb.AlertTarget:
        return await self.operations.CreateAlertTarget(parse_json(request.body, ops_pb.CreateAlertTargetRequest()), context)

    async def UpdateTrainingJobHttp(self, request, context) -> pb.TrainingJob:
        typed = parse_json(request.body, pb.UpdateTrainingJobRequest(), allowed={"priority"})
        typed.job_id = request.job_id
        return await self.typed.UpdateTrainingJob(typed, context)

    async def ValidateTrainingConfigHttp(self, request, context) -> pb.ValidateTrainingConfigResponse:
        return await self.typed.ValidateTrainingConfig(parse_json(request.body, pb.ValidateTrainingConfigRequest()), context)

    async def EvaluateModelVersionHttp(self, request, context) -> pb.EvaluateModelVersionResponse:
        typed = parse_json(
            request.body,
            pb.EvaluateModelVersionRequest(),
            allowed={"evaluation_start", "evaluation_end", "evaluationStart", "evaluationEnd", "tenant_id", "tenantId"},
        )
        typed.model_id = request.model_id
        return await self.typed.EvaluateModelVersion(typed, context)

    async def ForecastModelVersionHttp(self, request, context) -> httpbody_pb2.HttpBody:
        fmt = (request.format or "json").lower()
        if fmt not in convert.FORMATS:
            raise RequestError("format", f"{shown(request.format)} is not one of {', '.join(convert.FORMATS)}")
        typed = parse_json(_one_or_list(request.body, "series"), pb.ForecastModelVersionRequest(), allowed=FORECAST_FIELDS)
        typed.model_id = request.model_id
        version, alias, rows = await self.typed.forecast_rows(typed)
        if fmt == "json":  # straight from the rows (24,000 points in tens of ms, not through protobuf)
            answer = json.dumps(convert.forecast_json(version, alias, rows)).encode()
            return httpbody_pb2.HttpBody(content_type="application/json", data=answer)
        data, content_type = convert.forecast_file(rows, fmt)
        return httpbody_pb2.HttpBody(content_type=content_type, data=data)

    async def DetectModelVersionHttp(self, request, context) -> httpbody_pb2.HttpBody:
        typed = parse_json(request.body, pb.DetectModelVersionRequest(), allowed={"tenant_id", "tenantId", "start", "end", "rows"})
        typed.model_id = request.model_id
        return json_body(convert.detect_json(await self.typed.DetectModelVersion(typed, context)))

    async def GetTrainingJobMetricsHttp(self, request, context) -> httpbody_pb2.HttpBody:
        resp = await self.typed.GetTrainingJobMetrics(pb.GetTrainingJobMetricsRequest(job_id=request.job_id), context)
        return json_body(dict(sorted(resp.metrics.items())))

    async def ListRayClustersHttp(self, request, context) -> httpbody_pb2.HttpBody:
        resp = await self.typed.ListRayClusters(pb.ListRayClustersRequest(), context)
        return json_body(
            [
                json_format.MessageToDict(c, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
                for c in resp.clusters
            ]
        )

    async def ImportFeatureDataHttp(
        self, request_iterator: AsyncIterator[http_pb.ImportFeatureDataHttpRequest], context
    ) -> pb.ImportFeatureDataResponse:
        """The body streams in: the transcoder sends each piece as Envoy reads it (the first
        with the path and query fields and the content type), and each becomes a chunk of
        the streaming import, which spools it to disk. The server holds a few pieces of the
        file at a time, whatever its size (bench/import_memory); the tenant's
        max_import_bytes bounds it, as for gRPC."""

        async def chunks() -> AsyncIterator[pb.ImportFeatureDataRequest]:
            first = True
            async for piece in request_iterator:
                if first:
                    first = False
                    yield pb.ImportFeatureDataRequest(
                        tenant_id=piece.tenant_id,
                        table=piece.table,
                        format=_import_format(piece.format, piece.body.content_type),
                        duplicates=piece.duplicates,
                        data=piece.body.data,
                    )
                else:
                    yield pb.ImportFeatureDataRequest(data=piece.body.data)

        return await self.typed.ImportFeatureData(chunks(), context)
