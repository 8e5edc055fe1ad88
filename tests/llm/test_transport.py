"""The error classification both provider clients share, on hand-made responses.

Which statuses are worth a retry decides whether a conversation fails at once or waits out
an outage; what the message keeps decides what a person reading the row learns.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from shared.llm.base import (
    LLMBadResponseError,
    LLMError,
    LLMModelNotFoundError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)
from shared.llm.transport import (
    MAX_CONNECT_SECONDS,
    MAX_ERROR_TEXT,
    error_text,
    parse_body,
    raise_for_status,
    request_timeout,
)

URL = "http://llm.test/api/chat"


def _response(status: int, *, json: object = None, content: bytes | None = None) -> httpx.Response:
    request = httpx.Request("POST", URL)
    if content is not None:
        return httpx.Response(status, content=content, request=request)
    return httpx.Response(status, json=json, request=request)


def _raised(response: httpx.Response, not_found: str | None = None) -> LLMError:
    with pytest.raises(LLMError) as info:
        raise_for_status(response, provider="ollama", not_found=not_found)
    return info.value


@pytest.mark.parametrize("status", [200, 201, 204, 302, 399])
def test_an_answer_below_400_is_no_error(status: int) -> None:
    raise_for_status(_response(status, json={}), provider="ollama", not_found="missing")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408, 429])
def test_busy_or_broken_servers_are_retriable(status: int) -> None:
    error = _raised(_response(status, json={"error": "busy"}))
    assert type(error) is LLMUnavailableError
    assert error.retriable is True
    assert error.status_code == status
    assert error.message == f"ollama is unavailable (HTTP {status} from {URL}): busy"


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422, 499])
def test_other_client_errors_are_rejected_requests(status: int) -> None:
    error = _raised(_response(status, json={"error": "no"}), not_found="model x is missing")
    assert type(error) is LLMRequestRejectedError
    assert error.retriable is False
    assert error.status_code == status
    assert error.message == f"ollama rejected the request (HTTP {status} from {URL}): no"


def test_a_404_on_a_generation_is_a_missing_model() -> None:
    error = _raised(_response(404, json={"error": "model 'm' not found"}), "pull it")
    assert type(error) is LLMModelNotFoundError
    assert (error.code, error.retriable, error.status_code) == ("llm_model_not_found", False, 404)
    assert error.message == "pull it (model 'm' not found)"


def test_a_404_elsewhere_is_a_wrong_url() -> None:
    error = _raised(_response(404, json={"error": "no route"}))
    assert type(error) is LLMRequestRejectedError
    assert error.status_code == 404


@pytest.mark.parametrize(
    ("response", "text"),
    [
        (_response(500, json={"error": "ollama says no"}), "ollama says no"),
        (_response(500, json={"error": {"message": "openai says no"}}), "openai says no"),
        (_response(500, json={"error": {"code": 1}}), '{"error":{"code":1}}'),
        (_response(500, json={"detail": "other"}), '{"detail":"other"}'),
        (_response(500, json=["a", "list"]), '["a","list"]'),
        (_response(500, content=b"plain\n  text\twith   gaps"), "plain text with gaps"),
        (_response(500, content=b"\xff\xfe not utf-8"), "\ufffd\ufffd not utf-8"),
        (_response(500, content=b""), "(no details)"),
        (_response(500, content=b"   \n "), "(no details)"),
    ],
)
def test_the_servers_own_explanation_is_kept_on_one_line(
    response: httpx.Response, text: str
) -> None:
    assert error_text(response) == text


def test_a_long_explanation_is_cut() -> None:
    exact = _response(500, json={"error": "x" * MAX_ERROR_TEXT})
    assert error_text(exact) == "x" * MAX_ERROR_TEXT
    longer = _response(500, json={"error": "y" * (MAX_ERROR_TEXT + 1)})
    assert error_text(longer) == "y" * MAX_ERROR_TEXT + "..."
    assert MAX_ERROR_TEXT == 300


class _Body(BaseModel):
    text: str
    count: int


def test_a_valid_body_is_parsed() -> None:
    parsed = parse_body(_response(200, json={"text": "hi", "count": 2}), _Body, provider="x")
    assert (parsed.text, parsed.count) == ("hi", 2)


def test_a_wrong_body_names_at_most_three_fields_and_never_their_values() -> None:
    bad = {"text": 1, "count": "secret-value", "extra": 1}
    with pytest.raises(LLMBadResponseError) as info:
        parse_body(_response(200, json=bad), _Body, provider="ollama")
    error = info.value
    assert error.status_code == 200
    assert error.retriable is False
    assert error.message == (
        f"ollama sent an invalid response from {URL}: text: string_type; count: int_parsing"
    )
    assert "secret-value" not in error.message
    many = {f"f{i}": int for i in range(5)}
    wide = type("Wide", (BaseModel,), {"__annotations__": many})
    with pytest.raises(LLMBadResponseError) as info:
        parse_body(_response(200, json={}), wide, provider="ollama")
    assert info.value.message.endswith(": f0: missing; f1: missing; f2: missing")


def test_a_body_that_is_not_json_is_a_bad_response() -> None:
    with pytest.raises(LLMBadResponseError) as info:
        parse_body(_response(200, content=b"<html>"), _Body, provider="ollama")
    assert info.value.message == f"ollama sent an invalid response from {URL}: body: json_invalid"


def test_connecting_is_bounded_lower_than_a_generation() -> None:
    long = request_timeout(120.0)
    assert (long.read, long.write, long.pool, long.connect) == (120.0, 120.0, 120.0, 10.0)
    short = request_timeout(3.0)
    assert (short.read, short.connect) == (3.0, 3.0)
    assert MAX_CONNECT_SECONDS == 10.0


def test_error_kinds_carry_their_code_and_retry_decision() -> None:
    kinds = [
        (LLMError, "llm_error", False),
        (LLMUnavailableError, "llm_unavailable", True),
        (LLMModelNotFoundError, "llm_model_not_found", False),
        (LLMRequestRejectedError, "llm_bad_request", False),
        (LLMBadResponseError, "llm_bad_response", False),
    ]
    for kind, code, retriable in kinds:
        error = kind("what happened", status_code=418)
        assert (error.code, error.retriable) == (code, retriable)
        assert (error.message, str(error), error.status_code) == (
            "what happened",
            "what happened",
            418,
        )
    assert LLMError("no status").status_code is None
