"""Typed exceptions for gRPC errors of the training service.

The server sends a ``google.rpc.Status`` with an ``ErrorInfo`` whose reason is the
guide's error name (ConfigValidationError, DataLoadError, ResourceError, ...) and, for
bad input, ``BadRequest`` field violations; :func:`from_rpc_error` turns that back into
one of the classes here.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class AIHubError(Exception):
    """Any error the service answered. ``reason`` is the guide's error name."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, details: dict[str, str], violations: list[tuple[str, str]]):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.violations = violations

    def __str__(self) -> str:
        # The server's message often names the first problems already ("Invalid request:
        # job_id: ..."): each violation is said once.
        extra = "".join(f"\n  {field}: {desc}" for field, desc in self.violations if f"{field}: {desc}" not in self.message)
        return f"{self.reason or self.code.name}: {self.message}{extra}"


class ConfigValidationError(AIHubError):
    """The configuration or request is invalid; ``violations`` name each field."""


class DataLoadError(AIHubError):
    """The training data is missing (table, column or rows)."""


class ResourceError(AIHubError):
    """Not enough cluster resources."""


class NotFoundError(AIHubError):
    """No such job (or other resource)."""


class InvalidStateError(AIHubError):
    """The job is not in a state that allows the operation (e.g. retrying a COMPLETED job)."""


class UnavailableError(AIHubError):
    """The service or its database cannot be reached right now; try again."""


class AuthenticationError(AIHubError):
    """No API key, or one that is unknown or revoked (UNAUTHENTICATED; HTTP 401)."""


class PermissionDeniedError(AIHubError):
    """The API key may not do this (PERMISSION_DENIED; HTTP 403), e.g. act for another tenant."""


class AlreadyExistsError(AIHubError):
    """A request_id reused with a different request (ALREADY_EXISTS; HTTP 409); details name the job."""


class QuotaExceededError(ResourceError):
    """A tenant quota does not allow the request (RESOURCE_EXHAUSTED; HTTP 429); details name the limit."""


_BY_REASON = {
    "ConfigValidationError": ConfigValidationError,
    "DataLoadError": DataLoadError,
    "ResourceError": ResourceError,
    "QuotaExceeded": QuotaExceededError,
}
_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: ConfigValidationError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidStateError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def from_rpc_error(error: grpc.RpcError) -> AIHubError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    reason, details, violations = "", {}, []
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    if status is not None:
        message = status.message
        for any_msg in status.details:
            if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_msg.Unpack(info)
                reason, details = info.reason, dict(info.metadata)
            elif any_msg.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_msg.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, AIHubError)
    return cls(code, reason, message or "", details, violations)
