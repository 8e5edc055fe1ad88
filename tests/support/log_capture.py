"""What the service logs, captured: `configure_logging` into a buffer, then restored."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
