"""OpenAICompatClient against the stand-in over loopback: URL, auth header, errors."""

from __future__ import annotations

import time

import httpx
import pytest

from shared.llm.base import (
    ChatMessage,
    GenerationRequest,
    LLMBadResponseError,
    LLMError,
    LLMModelNotFoundError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)
from shared.llm.openai_compat import OpenAICompatClient
from tests.support.fake_llm import FakeLLMServer

MODEL = "gpt-4o-mini"
API_KEY = "sk-test-5b1e77d2"
SECRET = "the launch codes are 7f3a9c"


def _request(prompt: str = SECRET, **options: float | int | None) -> GenerationRequest:
    return GenerationRequest(
        model=MODEL,
        messages=(
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content=prompt),
        ),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def openai(http: httpx.AsyncClient, llm: FakeLLMServer) -> OpenAICompatClient:
    return OpenAICompatClient(http, llm.url, timeout_seconds=5.0, api_key=API_KEY)


async def _error(client: OpenAICompatClient) -> LLMError:
    with pytest.raises(LLMError) as info:
        await client.generate(_request())
    assert SECRET not in str(info.value)
    assert API_KEY not in str(info.value)
    return info.value


async def test_generate_returns_text_tokens_and_finish_reason(
    openai: OpenAICompatClient, llm: FakeLLMServer
) -> None:
    llm.configure(delay_seconds=0.05)
    started = time.perf_counter()
    result = await openai.generate(
        _request("hello world", temperature=0.5, top_p=1.0, max_tokens=9)
    )
    outside_ms = (time.perf_counter() - started) * 1000

    assert result.text == "echo: hello world"
    assert (result.input_tokens, result.output_tokens) == (4, 3)
    assert result.finish_reason == "stop"
    assert result.model == MODEL
    # The call's wall time: at least the server's delay, at most what the caller saw.
    assert 50 <= result.latency_ms <= outside_ms
    stats = llm.stats()
    assert stats.last_path == "/v1/chat/completions"
    assert stats.last_body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello world"},
        ],
        "stream": False,
        "temperature": 0.5,
        "top_p": 1.0,
        "max_tokens": 9,
    }
    assert stats.last_headers["authorization"] == f"Bearer {API_KEY}"


async def test_max_tokens_cut_gives_length_finish_reason(openai: OpenAICompatClient) -> None:
    result = await openai.generate(_request("a b c d", max_tokens=3))

    assert (result.text, result.output_tokens, result.finish_reason) == ("echo: a b", 3, "length")


async def test_missing_usage_gives_unknown_token_counts(
    openai: OpenAICompatClient, llm: FakeLLMServer
) -> None:
    llm.configure(omit=("usage",))

    result = await openai.generate(_request("hi"))

    assert (result.text, result.input_tokens, result.output_tokens) == ("echo: hi", None, None)


async def test_no_authorization_header_without_a_key(
    http: httpx.AsyncClient, llm: FakeLLMServer
) -> None:
    client = OpenAICompatClient(http, llm.url, timeout_seconds=5.0, api_key=None)

    await client.generate(_request("hi"))
    assert "authorization" not in llm.stats().last_headers
    await client.list_models()
    assert "authorization" not in llm.stats().last_headers


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_base_url_with_or_without_v1(
    http: httpx.AsyncClient, llm: FakeLLMServer, suffix: str
) -> None:
    client = OpenAICompatClient(http, llm.url + suffix, timeout_seconds=5.0, api_key=None)

    await client.generate(_request("hi"))

    assert llm.stats().last_path == "/v1/chat/completions"
    assert client.base_url == f"{llm.url}/v1"


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (503, LLMUnavailableError, "llm_unavailable"),
        (500, LLMUnavailableError, "llm_unavailable"),
        (429, LLMUnavailableError, "llm_unavailable"),
        (408, LLMUnavailableError, "llm_unavailable"),
        (404, LLMModelNotFoundError, "llm_model_not_found"),
        (401, LLMRequestRejectedError, "llm_bad_request"),
        (422, LLMRequestRejectedError, "llm_bad_request"),
    ],
)
async def test_status_is_classified(
    openai: OpenAICompatClient,
    llm: FakeLLMServer,
    status: int,
    kind: type[LLMError],
    code: str,
) -> None:
    llm.configure(mode="status", status=status, error=f"server says {status}")

    error = await _error(openai)

    assert type(error) is kind
    assert (error.code, error.status_code) == (code, status)
    assert error.retriable is (kind is LLMUnavailableError)
    assert f"server says {status}" in error.message  # read from OpenAI's nested error shape


async def test_unknown_model_names_the_model(
    openai: OpenAICompatClient, llm: FakeLLMServer
) -> None:
    llm.configure(strict_models=True, models=("gpt-4o",))

    error = await _error(openai)

    assert isinstance(error, LLMModelNotFoundError)
    assert f"model '{MODEL}' does not exist" in error.message


async def test_timeout_is_retriable(http: httpx.AsyncClient, llm: FakeLLMServer) -> None:
    llm.configure(mode="slow", delay_seconds=3)
    client = OpenAICompatClient(http, llm.url, timeout_seconds=0.2, api_key=API_KEY)

    assert isinstance(await _error(client), LLMUnavailableError)


async def test_connection_refused_is_retriable(http: httpx.AsyncClient, closed_url: str) -> None:
    error = await _error(OpenAICompatClient(http, closed_url, timeout_seconds=2, api_key=API_KEY))

    assert isinstance(error, LLMUnavailableError)
    assert f"unreachable at {closed_url}/v1/chat/completions" in error.message


async def test_connection_closed_mid_body_is_retriable(
    openai: OpenAICompatClient, llm: FakeLLMServer
) -> None:
    llm.configure(mode="close_mid_stream")

    assert isinstance(await _error(openai), LLMUnavailableError)


@pytest.mark.parametrize(
    "change",
    [
        {"mode": "garbage"},
        {"overrides": {"choices": []}},
        {"overrides": {"choices": [{"message": {"content": None}, "finish_reason": "stop"}]}},
        {"omit": ("choices",)},
        {"overrides": {"usage": {"prompt_tokens": -1}}},
    ],
    ids=["garbage", "no_choices", "null_content", "choices_missing", "negative_usage"],
)
async def test_malformed_answer_is_a_bad_response(
    openai: OpenAICompatClient, llm: FakeLLMServer, change: dict[str, object]
) -> None:
    llm.configure(**change)

    error = await _error(openai)

    assert isinstance(error, LLMBadResponseError)
    assert error.retriable is False


async def test_list_models_returns_ids_and_sends_the_key(
    openai: OpenAICompatClient, llm: FakeLLMServer
) -> None:
    llm.configure(models=("gpt-4o", "gpt-4o-mini"))

    assert await openai.list_models() == ["gpt-4o", "gpt-4o-mini"]
    assert llm.stats().last_path == "/v1/models"
    assert llm.stats().last_headers["authorization"] == f"Bearer {API_KEY}"


def test_repr_hides_the_key(openai: OpenAICompatClient) -> None:
    assert API_KEY not in repr(openai)
    assert API_KEY not in str(vars(openai).get("_root"))
