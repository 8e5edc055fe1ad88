"""The one error hierarchy; the API renders it as `{"code", "message", "details"}`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    VALIDATION_ERROR = "validation_error"
    TOO_MANY_REQUESTS = "too_many_requests"
    INTERNAL_ERROR = "internal_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    ERROR = "error"


class AppError(Exception):
    """A failure the caller can act on; carries its HTTP status and stable code."""

    status_code: int = 500
    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str]:
        """Response headers the status calls for (`Retry-After`, `WWW-Authenticate`)."""
        return {}


class _RetryLaterError(AppError):
    def __init__(self, message: str, *, details: Any = None, retry_after: int = 5) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class BadRequestError(AppError):
    status_code = 400
    code = ErrorCode.BAD_REQUEST


class UnprocessableError(AppError):
    """Well-formed, but not acceptable as it stands (e.g. an idempotency key reused with
    another body); rendered like field validation errors."""

    status_code = 422
    code = ErrorCode.VALIDATION_ERROR


class NotFoundError(AppError):
    status_code = 404
    code = ErrorCode.NOT_FOUND


class UnauthorizedError(AppError):
    """No credentials, or credentials that name no active key."""

    status_code = 401
    code = ErrorCode.UNAUTHORIZED

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(AppError):
    """A valid key whose role does not allow the action."""

    status_code = 403
    code = ErrorCode.FORBIDDEN


class ConflictError(AppError):
    status_code = 409
    code = ErrorCode.CONFLICT


class TooManyRequestsError(_RetryLaterError):
    status_code = 429
    code = ErrorCode.TOO_MANY_REQUESTS


class ServiceUnavailableError(_RetryLaterError):
    status_code = 503
    code = ErrorCode.SERVICE_UNAVAILABLE
