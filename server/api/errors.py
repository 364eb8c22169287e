"""One interceptor turns the project's errors into gRPC statuses with
``google.rpc.ErrorInfo`` (reason = the guide's error name) and ``BadRequest`` field
violations. Anything unexpected becomes INTERNAL with a logged traceback, never a hang."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from storage import errors as storage_errors
from trainers.errors import ConfigValidationError, DataLoadError, JobCancelled, ResourceError, TrainingError, Violation

log = logging.getLogger(__name__)
DOMAIN = "aihub.training"


class RequestError(ConfigValidationError):
    """A bad request field outside the training config (tenant_id, priority, ...)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__([Violation(field, description)], message="Invalid request")

    reason = "InvalidRequest"


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
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata={k: str(v) for k, v in (metadata or {}).items()}))
    details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description) for v in violations]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


def to_status(exc: BaseException) -> status_pb2.Status:
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
    if isinstance(exc, storage_errors.ModelNotFound):
        return _status(code.NOT_FOUND, "ModelNotFound", str(exc), {"model_id": exc.model_id})
    if isinstance(exc, storage_errors.InvalidTransition):
        return _status(code.FAILED_PRECONDITION, "InvalidStateTransition", str(exc), {"job_id": exc.job_id, "status": exc.current})
    if isinstance(exc, storage_errors.InvalidFeatureData):
        return _status(code.INVALID_ARGUMENT, "InvalidFeatureData", str(exc), {"field": exc.field}, [Violation(exc.field, str(exc))])
    if isinstance(exc, (storage_errors.FeatureTableNotFound, storage_errors.FeatureColumnNotFound)):
        return _status(code.FAILED_PRECONDITION, "DataLoadError", str(exc))
    if isinstance(exc, storage_errors.DatabaseUnavailable):
        return _status(code.UNAVAILABLE, "DatabaseUnavailable", str(exc))
    log.exception("unexpected error in a request", exc_info=exc)
    return _status(code.INTERNAL, "InternalError", f"internal error: {type(exc).__name__}: {exc}")


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    await context.abort_with_status(rpc_status.to_status(to_status(exc)))


def _wrap_unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never swallowed
            await _abort(context, exc)

    return handler


def _wrap_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in fn(request, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc)

    return handler


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/aihub."):
            return handler
        kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream), **kwargs)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream), **kwargs)
        return handler
