"""What the service logs: captured in process (`configure_logging` into a buffer, then
restored), or read back from a process's JSON log (`log_events`) as timed events."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loguru import logger

from shared.logs import _STDLIB_LOGGERS, configure_logging
from shared.settings import Settings

_ROUTED = tuple(_STDLIB_LOGGERS)


def make_settings(**overrides: Any) -> Settings:
    """Settings from defaults and `overrides` only, whatever the environment says."""
    values: dict[str, Any] = {
        "SERVICE_NAME": "ai-eng-api",
        "LOG_FORMAT": "JSON",
        "LOG_LEVEL": "INFO",
        "LOG_PROMPTS": False,
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
        "OTEL_TRACES_FILE": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass(frozen=True)
class LogEvent:
    """One line of a process's JSON log: when it was written, what, about which conversation."""

    at: datetime
    message: str
    conversation_id: str | None
    extra: dict[str, Any]


def log_events(text: str, message: str | None = None) -> list[LogEvent]:
    """The JSON lines of a process log (`LOG_FORMAT=JSON`) in order, those saying `message`
    when given. A line being written as the log is read, or one a library printed before
    logging was set up, is not an event and is left out."""
    events = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "timestamp" not in record:
            continue
        if message is not None and record.get("message") != message:
            continue
        events.append(
            LogEvent(
                at=datetime.fromisoformat(record["timestamp"]),
                message=str(record.get("message")),
                conversation_id=record.get("conversation_id"),
                extra=dict(record.get("extra") or {}),
            )
        )
    return events


class LogCapture:
    """What the configured sink wrote."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        """Every line parsed as JSON (fails the test if a line is not exactly one object)."""
        return [json.loads(line) for line in self.text().splitlines()]

    def find(self, message: str) -> list[dict[str, Any]]:
        return [record for record in self.records() if record["message"] == message]


@contextmanager
def captured_logging(
    process_name: str = "api", *, to_stdout: bool = False, **overrides: Any
) -> Iterator[LogCapture]:
    """`configure_logging` into a buffer (or stdout); loguru and stdlib logging are restored."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.propagate, lg.level)
        for name in _ROUTED
        for lg in [logging.getLogger(name)]
    }
    capture = LogCapture()
    try:
        stream = None if to_stdout else capture.stream
        configure_logging(make_settings(**overrides), process_name=process_name, stream=stream)
        yield capture
    finally:
        logger.remove()
        logger.add(sys.stderr)
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, propagate, level) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.setLevel(level)
