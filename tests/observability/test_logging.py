"""Logging: the JSON line shape, ids from contextvars and spans, stdlib routing, redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import socket
from datetime import datetime

from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

from shared.logs import bind_context, log_context, redact_prompt
from tests.support.auth import ADMIN_KEY
from tests.support.log_capture import captured_logging, make_settings

JSON_KEYS = {
    "timestamp",
    "level",
    "message",
    "logger",
    "service",
    "process",
    "environment",
    "instance",
    "request_id",
    "trace_id",
    "span_id",
    "conversation_id",
    "job_id",
    "extra",
}


def test_json_line_has_the_documented_keys_and_values() -> None:
    with captured_logging(
        process_name="worker", ENVIRONMENT="HML", ADMIN_API_KEY=ADMIN_KEY
    ) as logs:
        logger.info("conversation_stored", attempt=2, model="llama3.2:3b")

    configured, stored = logs.records()
    assert configured["message"] == "logging_configured"
    assert set(stored) == JSON_KEYS
    assert stored["level"] == "INFO"
    assert stored["logger"] == __name__
    assert (stored["service"], stored["process"], stored["environment"]) == (
        "ai-eng-api",
        "worker",
        "HML",
    )
    assert stored["instance"] == f"{socket.gethostname()}:{os.getpid()}"
    assert stored["request_id"] is None
    assert stored["trace_id"] is None
    assert stored["job_id"] is None
    assert stored["extra"] == {"attempt": 2, "model": "llama3.2:3b"}
    assert stored["timestamp"].endswith("Z")
    assert datetime.fromisoformat(stored["timestamp"]).utcoffset() is not None


def test_default_sink_is_stdout_one_object_per_line(capsys) -> None:
    with captured_logging(to_stdout=True):
        logger.info("to_stdout", text="line one\nline two")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["extra"] == {"text": "line one\nline two"}


def test_bound_ids_and_the_current_span_are_on_every_line() -> None:
    tracer = TracerProvider().get_tracer("test")
    with captured_logging() as logs:
        with (
            bind_context(request_id="req-1", conversation_id="c0ffee"),
            tracer.start_as_current_span("handling") as span,
        ):
            logger.info("inside")
        logger.info("outside")

    inside, outside = logs.find("inside")[0], logs.find("outside")[0]
    context = span.get_span_context()
    assert inside["request_id"] == "req-1"
    assert inside["conversation_id"] == "c0ffee"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["extra"] == {}
    assert outside["request_id"] is None
    assert outside["trace_id"] is None


def test_bind_context_nests_and_restores() -> None:
    assert log_context() == {}
    with bind_context(request_id="r", job_id="j1"):
        with bind_context(job_id=None, conversation_id=42):
            assert log_context() == {"request_id": "r", "conversation_id": "42"}
        assert log_context() == {"request_id": "r", "job_id": "j1"}
    assert log_context() == {}


def test_explicitly_bound_id_wins_over_the_ambient_one() -> None:
    with captured_logging() as logs, bind_context(conversation_id="ambient"):
        logger.bind(conversation_id="explicit").info("bound")
    assert logs.find("bound")[0]["conversation_id"] == "explicit"


async def test_tasks_started_inside_a_bound_block_inherit_its_ids() -> None:
    async def library_code() -> None:
        await asyncio.sleep(0)
        logging.getLogger("arq.jobs").warning("deep_inside")

    with captured_logging() as logs:
        with bind_context(job_id="job-7"):
            task = asyncio.create_task(library_code())
        await task

    assert logs.find("deep_inside")[0]["job_id"] == "job-7"


def test_exception_text_is_included() -> None:
    with captured_logging() as logs:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("division_failed")
    record = logs.find("division_failed")[0]
    assert record["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in record["exception"]
    assert "exception" not in logs.find("logging_configured")[0]


def test_human_format_is_one_readable_line_with_the_ids() -> None:
    with captured_logging(LOG_FORMAT="HUMAN") as logs, bind_context(request_id="abc"):
        # Braces in the message and in values are data, not template fields.
        logger.bind(retry_in=3, detail="{oops}").warning("human_event {not_a_field}")

    line = logs.text().splitlines()[-1]
    assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} \| WARNING ", line)
    assert "human_event {not_a_field}" in line
    assert "request_id=abc" in line
    assert "retry_in=3" in line
    assert "detail={oops}" in line
    assert not line.startswith("{")


def test_stdlib_loggers_are_routed_with_their_names_and_levels() -> None:
    # What uvicorn's dictConfig leaves behind: its own handler, no propagation.
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_own_output = io.StringIO()
    uvicorn_error.addHandler(logging.StreamHandler(uvicorn_own_output))
    uvicorn_error.propagate = False

    with captured_logging() as logs, bind_context(request_id="r-9"):
        uvicorn_error.error("Exception in ASGI application")
        logging.getLogger("uvicorn.access").info('%s - "%s %s" %d', "1.2.3.4", "GET", "/x", 200)
        logging.getLogger("sqlalchemy.engine").info("SELECT 1")
        logging.getLogger("sqlalchemy.engine").warning("pool overflow")
        logging.getLogger("httpx").info("HTTP Request: POST http://llm")

    assert uvicorn_own_output.getvalue() == ""
    by_message = {record["message"]: record for record in logs.records()}
    assert by_message["Exception in ASGI application"]["logger"] == "uvicorn.error"
    assert by_message["Exception in ASGI application"]["level"] == "ERROR"
    # The API's own `http_request` line is the access log; uvicorn's would be a second one.
    assert '1.2.3.4 - "GET /x" 200' not in by_message
    # uvicorn asks for handlers before it even formats its access line: there are none.
    assert not logging.getLogger("uvicorn.access").hasHandlers()
    assert by_message["pool overflow"]["level"] == "WARNING"
    # Statement and request chatter stays below the floor set for those libraries.
    assert "SELECT 1" not in by_message
    assert "HTTP Request: POST http://llm" not in by_message


def test_configuring_twice_still_writes_each_line_once() -> None:
    with captured_logging() as first:
        with captured_logging() as second:
            logger.info("once")
            logging.getLogger("arq").info("once_from_stdlib")
        assert first.find("once") == []
        assert len(second.find("once")) == 1
        assert len(second.find("once_from_stdlib")) == 1


def test_level_setting_filters_lines() -> None:
    with captured_logging(LOG_LEVEL="warning") as logs:
        logger.info("too_quiet")
        logging.getLogger("arq").info("too_quiet_stdlib")
        logger.warning("loud_enough")
    assert [record["message"] for record in logs.records()] == ["loud_enough"]


def test_prompts_are_redacted_unless_enabled() -> None:
    prompt = "my password is hunter2"
    redacted = redact_prompt(prompt, make_settings())
    assert "hunter2" not in redacted
    assert str(len(prompt)) in redacted
    assert redact_prompt(prompt, make_settings(LOG_PROMPTS=True)) == prompt
