"""Every error leaves the API as `{"code", "message", "details"}`; this module renders them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import is_db_unavailable
from shared.errors import AppError, ErrorCode

DB_UNAVAILABLE_RETRY_AFTER = 5

_CODE_BY_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.TOO_MANY_REQUESTS,
    500: ErrorCode.INTERNAL_ERROR,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


class ErrorResponse(BaseModel):
    code: ErrorCode
    message: str
    details: Any = None


def code_for_status(status_code: int) -> ErrorCode:
    return _CODE_BY_STATUS.get(status_code, ErrorCode.ERROR)


def error_response(
    status_code: int,
    message: str,
    *,
    details: Any = None,
    code: ErrorCode | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        code=code or code_for_status(status_code), message=message, details=details
    )
    return JSONResponse(status_code=status_code, content=jsonable_encoder(body), headers=headers)


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the error body for each status a route returns."""
    return {
        code: {"model": ErrorResponse, "description": HTTPStatus(code).phrase}
        for code in status_codes
    }


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: echoing `input` could send a whole prompt back.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


async def _handle_app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(
        exc.status_code, exc.message, details=exc.details, code=exc.code, headers=exc.headers()
    )


async def _handle_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(400, "Malformed JSON body", details=details)
    return error_response(422, "Request validation failed", details=details)


async def _handle_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # Starlette types `detail` as str, but FastAPI's HTTPException accepts any JSON value.
    detail: Any = exc.detail
    message = detail if isinstance(detail, str) else HTTPStatus(exc.status_code).phrase
    details = None if isinstance(detail, str) else detail
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, message, details=details, headers=headers)


async def _handle_db_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("database_unavailable", error=type(exc).__name__)
    return error_response(
        503,
        "Database unavailable, retry later",
        headers={"Retry-After": str(DB_UNAVAILABLE_RETRY_AFTER)},
    )


async def _handle_db_error(request: Request, exc: Exception) -> JSONResponse:
    if is_db_unavailable(exc):
        return await _handle_db_unavailable(request, exc)
    return await _handle_unexpected(request, exc)


async def _handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.opt(exception=exc).error("unhandled_exception")
    return error_response(500, "Internal server error")


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _handle_app_error)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    for unavailable in (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError):
        app.add_exception_handler(unavailable, _handle_db_unavailable)
    app.add_exception_handler(DBAPIError, _handle_db_error)
    app.add_exception_handler(Exception, _handle_unexpected)
