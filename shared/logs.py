"""Loguru setup for both processes: one stdout sink, JSON or human lines, ids on every line.

Request, conversation and job ids live in a contextvar, so library code logging deep inside a
request or a job carries them without being handed a logger; the trace and span ids are read
from the current OpenTelemetry span when the line is written.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import sys
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger
from opentelemetry import trace

from shared.settings import LogFormat, Settings

if TYPE_CHECKING:
    from loguru import Message, Record

ID_KEYS = ("request_id", "trace_id", "span_id", "conversation_id", "job_id")

# Holds the logger name of intercepted stdlib records; loguru's own `name` would be the module
# that called `logging`, which says less than "uvicorn.access" or "sqlalchemy.engine".
_LOGGER_KEY = "logger"

# Pairs rather than a dict so the default is immutable and a nested block never mutates its
# parent's ids.
_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("log_context", default=())

# Library loggers routed into loguru, with the lowest level each may emit: the engine logs every
# statement at INFO and httpx every request, which would drown the lines that matter.
_STDLIB_LOGGERS: Mapping[str, int] = {
    "uvicorn": logging.NOTSET,
    "uvicorn.error": logging.NOTSET,
    "sqlalchemy": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
    "sqlalchemy.pool": logging.WARNING,
    "arq": logging.NOTSET,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "alembic": logging.NOTSET,
}


class bind_context:  # noqa: N801  # used as a function: `with bind_context(request_id=...)`
    """Put `ids` on every line logged inside the block, here and in tasks started from it.

    A `None` value hides an id bound by an enclosing block; the previous ids come back on exit.
    A plain class rather than a generator: it is entered on every request.
    """

    __slots__ = ("_ids", "_token")

    def __init__(self, **ids: object) -> None:
        self._ids = ids

    def __enter__(self) -> None:
        current = _context.get()
        if not current and None not in self._ids.values():
            # The common case, a request's or a job's first ids: nothing to merge.
            self._token = _context.set(tuple([(k, str(v)) for k, v in self._ids.items()]))
            return
        merged = dict(current)
        for key, value in self._ids.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = str(value)
        self._token = _context.set(tuple(merged.items()))

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._token)


def log_context() -> dict[str, str]:
    """The ids bound by the enclosing `bind_context` blocks."""
    return dict(_context.get())


def instance_id() -> str:
    """This replica: `<host>:<pid>` (on Kubernetes the host name is the pod's). Logs, traces
    and the worker heartbeat all name a process by it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def redact_prompt(text: str, settings: Settings) -> str:
    """`text` when `LOG_PROMPTS` is on; otherwise only its length, so user content stays out."""
    if settings.LOG_PROMPTS:
        return text
    return f"<redacted {len(text)} chars>"


def _add_context(record: Record) -> None:
    _add_ids(record["extra"])
    record["extra"].setdefault(_LOGGER_KEY, record["name"])


def _add_ids(extra: dict[str, Any]) -> None:
    # Ids bound explicitly with `logger.bind` are more specific than the ambient ones.
    for key, value in _context.get():
        extra.setdefault(key, value)
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        extra.setdefault("trace_id", format(span_context.trace_id, "032x"))
        extra.setdefault("span_id", format(span_context.span_id, "016x"))


def _utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# One encoder for every line (`json.dumps` with options builds one per call).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class _JsonSink:
    """Writes each record as one JSON object on one line (a stream to loguru: `write` takes
    its message, `stop` is called when the sink is removed)."""

    def __init__(self, stream: TextIO, static: Mapping[str, str], level_no: int) -> None:
        self._stream = stream
        self._static = static
        self.level_no = level_no

    def write(self, message: Message) -> None:
        record = message.record
        extra = dict(record["extra"])
        error = record["exception"]
        self.line(
            _utc_timestamp(record["time"]),
            record["level"].name,
            record["message"],
            str(extra.pop(_LOGGER_KEY, None) or record["name"]),
            extra,
            None
            if error is None
            else "".join(traceback.format_exception(error.type, error.value, error.traceback)),
        )

    def line(
        self,
        timestamp: str,
        level: str,
        message: str,
        logger_name: str,
        extra: dict[str, Any],
        exception: str | None = None,
    ) -> None:
        payload: dict[str, Any] = {
            "timestamp": timestamp,
            "level": level,
            "message": message,
            "logger": logger_name,
            **self._static,
        }
        for key in ID_KEYS:
            payload[key] = extra.pop(key, None)
        payload["extra"] = extra
        if exception is not None:
            payload["exception"] = exception
        self._stream.write(_ENCODER.encode(payload) + "\n")
        self._stream.flush()

    def stop(self) -> None:
        global _json_sink
        if _json_sink is self:
            _json_sink = None


# The JSON sink while it is loguru's (see `log_line`).
_json_sink: _JsonSink | None = None
_LEVEL_NUMBERS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def log_line(
    level: str,
    message: str,
    *,
    logger_name: str,
    exception: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log one line from a path every request takes (the API's access line).

    With the JSON format it is written straight to the sink: the same line, fields and ids
    that `logger.log` would write, without loguru's record (a frame lookup, thread and process
    objects, per-handler formatting), which costs more than the rest of a cheap request's
    logging. A line with a traceback, any other format, or a sink since removed goes through
    loguru as any line.
    """
    sink = _json_sink
    if sink is None or exception is not None:
        bound = logger.bind(**{_LOGGER_KEY: logger_name})
        bound.opt(exception=exception).log(level, message, **fields)
        return
    if _LEVEL_NUMBERS[level] < sink.level_no:
        return
    _add_ids(fields)
    sink.line(_utc_timestamp(datetime.now(UTC)), level, message, logger_name, fields)


def _human_format(record: Record) -> str:
    # Loguru formats the returned template with the record, so values are substituted as data:
    # only key names go into the template, and only those that are safe there.
    extra = record["extra"]
    keys = [key for key in ID_KEYS if extra.get(key) is not None]
    keys += [key for key in extra if key not in ID_KEYS and key != _LOGGER_KEY]
    fields = " ".join(f"{key}={{extra[{key}]}}" for key in keys if key.isidentifier())
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
        f"<cyan>{{extra[{_LOGGER_KEY}]}}</cyan> | <level>{{message}}</level>"
        + (f" | {fields}" if fields else "")
        + "\n{exception}"
    )


class InterceptHandler(logging.Handler):
    """Hands standard-library log records to loguru, keeping their level and logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Point loguru at the frame that called `logging`, not at this handler.
        frame, depth = inspect.currentframe(), 0
        while frame is not None:
            filename = frame.f_code.co_filename
            in_logging = filename == logging.__file__ or (
                "importlib" in filename and "_bootstrap" in filename
            )
            if depth > 0 and not in_logging:
                break
            frame = frame.f_back
            depth += 1
        logger.bind(**{_LOGGER_KEY: record.name}).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


# The API writes its own access line (`http_request`, with the request and trace ids); uvicorn's
# would be a second line for every request. Not merely held back by a level: uvicorn formats
# the line's arguments (quoting the path) before the level check whenever the logger has a
# handler somewhere, so this one has none and passes nothing on.
_SILENCED = ("uvicorn.access",)


def _route_stdlib_logging(level_no: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(InterceptHandler())
    root.setLevel(level_no)
    for name, floor in _STDLIB_LOGGERS.items():
        # uvicorn and arq install their own handlers; dropping them and propagating to the root
        # is what makes every line go through the one sink exactly once.
        std_logger = logging.getLogger(name)
        std_logger.handlers.clear()
        std_logger.propagate = True
        std_logger.disabled = False
        std_logger.setLevel(max(level_no, floor))
    for name in _SILENCED:
        silenced = logging.getLogger(name)
        silenced.handlers.clear()
        silenced.propagate = False


def configure_logging(
    settings: Settings, *, process_name: str, stream: TextIO | None = None
) -> None:
    """Send all logs, loguru's and the standard library's, to one sink on stdout.

    Safe to call again: sinks and handlers are replaced, not added. `stream` is for tests.
    """
    global _json_sink
    out = stream if stream is not None else sys.stdout
    level = settings.LOG_LEVEL.upper()
    logger.remove()
    logger.configure(patcher=_add_context)
    # `diagnose` would print local variables of every frame, prompts included.
    if settings.LOG_FORMAT is LogFormat.JSON:
        static = {
            "service": settings.SERVICE_NAME,
            "process": process_name,
            "environment": settings.ENVIRONMENT.value,
            "instance": instance_id(),
        }
        _json_sink = _JsonSink(out, static, logger.level(level).no)
        logger.add(_json_sink, level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(
            out, level=level, format=_human_format, colorize=None, backtrace=False, diagnose=False
        )
    _route_stdlib_logging(logger.level(level).no)
    logger.info(
        "logging_configured",
        log_format=settings.LOG_FORMAT.value,
        log_level=level,
    )
