"""Database errors carry no prompt, answer or email unless `LOG_PROMPTS` is on.

A failed statement's error lists its parameters, and PostgreSQL's DETAIL line quotes the
refused values (the taken email, the whole failing row). Both end up in logged tracebacks.
"""

from __future__ import annotations

import traceback
import uuid

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shared.db import create_engine
from shared.settings import Settings
from tests.api.conftest import assert_error
from tests.support.log_capture import captured_logging

EMAIL = "secret.person@example.com"
PROMPT = "my secret prompt about my health"

# (statement, parameters, the value that must not leak): a unique violation on an email and a
# check violation whose DETAIL quotes the whole row, prompt included.
STATEMENTS = {
    "unique_email": (
        'INSERT INTO "user" (email) VALUES (:value)',
        EMAIL,
    ),
    "failing_row": (
        "INSERT INTO conversation (user_id, model_version_id, prompt, status) "
        "VALUES (gen_random_uuid(), gen_random_uuid(), :value, 'bogus')",
        PROMPT,
    ),
}


async def _failure(settings: Settings, *, log_prompts: bool, case: str) -> IntegrityError:
    statement, value = STATEMENTS[case]
    engine = create_engine(
        settings.model_copy(update={"LOG_PROMPTS": log_prompts}), process_name="tests"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text('INSERT INTO "user" (email) VALUES (:e)'), {"e": EMAIL})
            with pytest.raises(IntegrityError) as caught:
                await conn.execute(text(statement), {"value": value})
            return caught.value
    finally:
        await engine.dispose()


def _everything_printed(exc: BaseException) -> str:
    """What a logged traceback shows: the error and every error it was raised from."""
    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("case", list(STATEMENTS))
async def test_database_errors_hide_values_by_default(
    settings: Settings, clean_db: None, case: str
) -> None:
    _, value = STATEMENTS[case]
    exc = await _failure(settings, log_prompts=False, case=case)
    assert value not in str(exc)
    assert value not in _everything_printed(exc)
    assert "SQL parameters hidden" in str(exc)
    # What the error is about stays readable.
    assert "violates" in str(exc)
    assert "DETAIL:  <redacted" in str(exc)


@pytest.mark.parametrize("case", list(STATEMENTS))
async def test_database_errors_show_values_with_log_prompts(
    settings: Settings, clean_db: None, case: str
) -> None:
    _, value = STATEMENTS[case]
    exc = await _failure(settings, log_prompts=True, case=case)
    assert value in str(exc)
    assert f"[parameters: ('{value}',)]" in str(exc)


async def test_a_logged_database_failure_carries_no_prompt(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.post("/boom-db")
    async def boom(request: Request) -> None:
        statement, value = STATEMENTS["failing_row"]
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text(statement), {"value": value})

    with captured_logging() as logs:
        response = await client.post("/boom-db")
    assert_error(response, 500, "internal_error")
    assert logs.find("unhandled_exception")
    assert "CheckViolationError" in logs.text()
    assert PROMPT not in logs.text()
    assert PROMPT not in response.text


async def test_a_lost_race_is_still_recognised_with_values_hidden(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    # The repository reads the constraint's name, which redaction leaves alone.
    assert not settings.LOG_PROMPTS
    email = f"{uuid.uuid4().hex}@example.com"
    first = await client.post("/users", json={"email": email})
    assert first.status_code == 201
    assert_error(await client.post("/users", json={"email": email}), 409, "conflict")
