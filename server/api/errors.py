"""One interceptor around every call of our services: it authenticates the caller
(server.api.auth), gives each unary call a server-side deadline, and turns the project's
errors into gRPC statuses with ``google.rpc.ErrorInfo`` (reason = the guide's error name)
and ``BadRequest`` field violations. Messages and details are cut to a bounded length (an
echoed value never makes a header Envoy cannot pass). Anything unexpected becomes INTERNAL
with a generic message and an error id that the server log carries with the traceback,
never the exception's type, text or SQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from storage import errors as storage_errors
from trainers.errors import ConfigValidationError, DataLoadError, JobCancelled, ResourceError, TrainingError, Violation

log = logging.getLogger(__name__)
DOMAIN = "aihub.training"
MAX_MESSAGE = 1000
MAX_DETAIL = 200
# Envoy's REST route marks the calls it transcodes with REST_MARK; to those, an error also
# carries GUIDE_BODY: the guide's error body ({"error", "message", "details"}) as JSON, which
# envoy.yaml's Lua filter puts in place of the transcoder's google.rpc.Status body.
REST_MARK = "x-aihub-rest"
GUIDE_BODY = "x-aihub-error"
MAX_GUIDE_BODY = 16_000  # bytes of ASCII JSON; violations past it are counted, not listed
# Details the guide shows as numbers (ErrorInfo metadata holds only strings).
NUMERIC_DETAILS = frozenset({"requested_workers", "available_workers", "allowed", "requested", "retry_after_seconds"})


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RequestError(ConfigValidationError):
    """A bad request field outside the training config (tenant_id, priority, ...)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__([Violation(field, description)], message="Invalid request")

    reason = "InvalidRequest"


class Unauthenticated(Exception):
    """No valid API key (UNAUTHENTICATED)."""


class PermissionDenied(Exception):
    """The key may not do this (PERMISSION_DENIED)."""


class RateLimited(Exception):
    """Too many of a client's calls failed (RESOURCE_EXHAUSTED, HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidState(TrainingError):
    """The resource's state does not allow the request (FAILED_PRECONDITION)."""

    reason = "InvalidState"
    retryable = False


def _status(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[Violation] = (),
) -> status_pb2.Status:
    details = []
    info = any_pb2.Any()
    meta = {shorten(str(k), 64): shorten(str(v), MAX_DETAIL) for k, v in list((metadata or {}).items())[:20]}
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=meta))
    details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=shorten(v.field, MAX_DETAIL), description=shorten(v.description, 400))
                    for v in violations[:50]
                ]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=shorten(message, MAX_MESSAGE), details=details)


def to_status(exc: BaseException) -> status_pb2.Status:  # noqa: PLR0912 - one table of error kinds
    code = grpc.StatusCode
    if isinstance(exc, ConfigValidationError):
        return _status(code.INVALID_ARGUMENT, exc.reason, str(exc), exc.details, exc.violations)
    if isinstance(exc, DataLoadError):
        return _status(code.FAILED_PRECONDITION, exc.reason, exc.message, exc.details)
    if isinstance(exc, ResourceError):
        return _status(code.RESOURCE_EXHAUSTED, exc.reason, exc.message, exc.details)
    if isinstance(exc, JobCancelled):
        return _status(code.CANCELLED, exc.reason, exc.message, exc.details)
    if isinstance(exc, TrainingError):
        return _status(code.FAILED_PRECONDITION, exc.reason, exc.message, exc.details)
    if isinstance(exc, storage_errors.JobNotFound):
        return _status(code.NOT_FOUND, "JobNotFound", str(exc), {"job_id": exc.job_id})
    if isinstance(exc, storage_errors.RequestIdReused):
        return _status(code.ALREADY_EXISTS, "RequestIdReused", str(exc), {"job_id": exc.job_id, "request_id": exc.request_id})
    if isinstance(exc, storage_errors.ModelNotFound):
        return _status(code.NOT_FOUND, "ModelNotFound", str(exc), {"model_id": exc.model_id})
    if isinstance(exc, storage_errors.AliasNotFound):
        return _status(code.NOT_FOUND, "AliasNotFound", str(exc), {"alias": exc.alias, "model_type": exc.model_type})
    if isinstance(exc, storage_errors.VersionHasAliases):
        return _status(code.FAILED_PRECONDITION, "InvalidState", str(exc), {"model_id": exc.model_id, "aliases": ",".join(exc.aliases)})
    if isinstance(exc, storage_errors.InvalidTransition):
        return _status(code.FAILED_PRECONDITION, "InvalidStateTransition", str(exc), {"job_id": exc.job_id, "status": exc.current})
    if isinstance(exc, storage_errors.InvalidFeatureData):
        return _status(code.INVALID_ARGUMENT, "InvalidFeatureData", str(exc), {"field": exc.field}, [Violation(exc.field, str(exc))])
    if isinstance(exc, (storage_errors.FeatureTableNotFound, storage_errors.FeatureColumnNotFound)):
        return _status(code.FAILED_PRECONDITION, "DataLoadError", str(exc), {"reason": str(exc), "table": f"features.{exc.table}"})
    if isinstance(exc, storage_errors.DatabaseUnavailable):
        return _status(code.UNAVAILABLE, "DatabaseUnavailable", "the database is unavailable; try again shortly")
    if isinstance(exc, Unauthenticated):
        return _status(code.UNAUTHENTICATED, "Unauthenticated", str(exc))
    if isinstance(exc, PermissionDenied):
        return _status(code.PERMISSION_DENIED, "PermissionDenied", str(exc))
    if isinstance(exc, RateLimited):
        return _status(code.RESOURCE_EXHAUSTED, "RateLimited", str(exc), {"retry_after_seconds": str(max(1, round(exc.retry_after)))})
    if isinstance(exc, storage_errors.InvalidTenantId):
        return _status(code.INVALID_ARGUMENT, "InvalidRequest", str(exc), {"field": "tenant_id"}, [Violation("tenant_id", str(exc))])
    if isinstance(exc, storage_errors.InvalidData):
        return _status(code.INVALID_ARGUMENT, "InvalidRequest", str(exc), {"sqlstate": exc.sqlstate}, [Violation("request", str(exc))])
    if isinstance(exc, storage_errors.QuotaExceeded):
        details = {"tenant_id": exc.tenant_id, "limit": exc.limit, "allowed": str(exc.allowed), "requested": str(exc.requested)}
        return _status(code.RESOURCE_EXHAUSTED, "QuotaExceeded", str(exc), details)
    if isinstance(exc, storage_errors.ScheduleNotFound):
        return _status(code.NOT_FOUND, "ScheduleNotFound", str(exc), {"schedule_id": exc.schedule_id})
    if isinstance(exc, storage_errors.AlertTargetNotFound):
        return _status(code.NOT_FOUND, "AlertTargetNotFound", str(exc), {"target_id": exc.target_id})
    if isinstance(exc, storage_errors.ApiKeyNotFound):
        return _status(code.NOT_FOUND, "ApiKeyNotFound", str(exc), {"key_id": exc.key_id})
    if isinstance(exc, TimeoutError):
        return _status(code.DEADLINE_EXCEEDED, "DeadlineExceeded", "the request took longer than the server allows; try a smaller one")
    error_id = uuid.uuid4().hex[:12]
    log.error("unexpected error in a request (error id %s)", error_id, exc_info=exc, extra={"error_id": error_id})
    return _status(
        code.INTERNAL, "InternalError", f"internal error (error id {error_id}; the server log has the details)", {"error_id": error_id}
    )


def guide_body(status: status_pb2.Status, *, tenant_id: str = "") -> str:
    """The guide's error body for a status: ``error`` (the reason name), ``message`` and
    ``details`` (the guide's keys: ``field``/``error`` and every violation for a config,
    ``reason``/``tenant_id``/``table`` for data, ``requested_workers``/``available_workers``
    for resources, the id for not-found), plus ``code`` (the gRPC status code, as before)."""
    reason, details, violations = "Error", {}, []
    for any_detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if any_detail.Unpack(info):
            reason = info.reason
            details = {k: int(v) if k in NUMERIC_DETAILS and v.isdigit() else v for k, v in info.metadata.items()}
        elif any_detail.Unpack(bad):
            violations = [{"field": v.field, "error": v.description} for v in bad.field_violations]
    if violations:
        details.setdefault("field", violations[0]["field"])
        details.setdefault("error", violations[0]["error"])
        details["violations"] = violations
    if reason == "DataLoadError":
        details.setdefault("reason", status.message)
        if tenant_id:
            details.setdefault("tenant_id", tenant_id)
    body = {"error": reason, "message": status.message, "details": details, "code": status.code}
    text = json.dumps(body, separators=(",", ":"))
    while len(text) > MAX_GUIDE_BODY and violations:
        violations.pop()
        details["violations_not_listed"] = int(details.get("violations_not_listed", 0)) + 1
        text = json.dumps(body, separators=(",", ":"))
    return text


def _is_rest(context: grpc.aio.ServicerContext) -> bool:
    return any(key == REST_MARK for key, _ in context.invocation_metadata() or ())


async def answer_rest_with_status(context: grpc.aio.ServicerContext, code: grpc.StatusCode, body: str, message: str) -> None:
    """For a transcoded (REST) call only: end it with ``code`` (Envoy maps it to the HTTP
    status: UNAVAILABLE is 503) and ``body`` as its JSON body, in place of the transcoder's
    error body. A gRPC call returns normally (nothing happens here): its answer says it all."""
    if _is_rest(context):
        await context.abort(code, message, trailing_metadata=((GUIDE_BODY, body),))


async def _abort(context: grpc.aio.ServicerContext, status: status_pb2.Status, request: Any = None) -> None:
    """Ends the call with ``status`` (made once by ``to_status``: an unexpected error is logged
    once, under the one error id the caller is given)."""
    grpc_status = rpc_status.to_status(status)
    if _is_rest(context):
        from server.api import auth  # auth imports this module's error classes

        tenant = getattr(request, "tenant_id", "") or auth.current().tenant_id or ""
        body = guide_body(status, tenant_id=tenant)
        grpc_status = grpc_status._replace(trailing_metadata=(*grpc_status.trailing_metadata, (GUIDE_BODY, body)))
    await context.abort_with_status(grpc_status)


class Authenticate(Protocol):
    async def __call__(self, metadata: Any, method: str, peer: str = "") -> None: ...


class Observe(Protocol):
    def __call__(self, method: str, code: str, seconds: float) -> None: ...


def _observe_nothing(method: str, code: str, seconds: float) -> None:
    return None


def _wrap_unary(
    fn: Callable[..., Awaitable[Any]], method: str, authenticate: Authenticate, deadline: float | None, observe: Observe
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, code = time.perf_counter(), "OK"
        try:
            await authenticate(context.invocation_metadata(), method, context.peer())
            async with asyncio.timeout(deadline):
                return await fn(request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            code = "ABORTED_BY_HANDLER"
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never swallowed
            status = to_status(exc)
            code = code_pb2.Code.Name(status.code)
            await _abort(context, status, request)
        finally:
            observe(method, code, time.perf_counter() - started)

    return handler


def _wrap_stream(fn: Callable[..., Any], method: str, authenticate: Authenticate, observe: Observe) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, code = time.perf_counter(), "OK"
        try:
            await authenticate(context.invocation_metadata(), method, context.peer())
            async for item in fn(request, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            code = "ABORTED_BY_HANDLER"
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001
            status = to_status(exc)
            code = code_pb2.Code.Name(status.code)
            await _abort(context, status, request)
        finally:
            observe(method, code, time.perf_counter() - started)

    return handler


async def _nobody(metadata: Any, method: str, peer: str = "") -> None:
    return None


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """``authenticate(metadata, method)`` runs first in every call (it binds the caller or
    raises); ``deadlines`` maps a method name to its own limit, ``deadline`` is the rest's
    (unary and client-streaming calls; server streams run as long as their job)."""

    def __init__(
        self,
        authenticate: Authenticate = _nobody,
        *,
        deadline: float | None = None,
        deadlines: Mapping[str, float] | None = None,
        observe: Observe = _observe_nothing,
    ) -> None:
        self.observe = observe  # (method, status code name, seconds) of every call that ended
        self.authenticate = authenticate
        self.deadline = deadline
        self.deadlines = dict(deadlines or {})

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith("/aihub."):
            return handler
        kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        deadline = self.deadlines.get(method.rsplit("/", 1)[-1], self.deadline)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, self.authenticate, deadline, self.observe), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, self.authenticate, deadline, self.observe), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, self.authenticate, self.observe), **kwargs
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, self.authenticate, self.observe), **kwargs
            )
        return handler
