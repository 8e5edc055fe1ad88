"""OllamaClient against the stand-in over loopback: results, every error kind, readiness."""

from __future__ import annotations

import asyncio
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
from shared.llm.ollama import OllamaClient, OllamaNotReadyError, check_ollama_ready
from tests.support.fake_llm import FakeLLMServer

MODEL = "llama3.2:3b"
# Sent by the error tests: no error message may ever contain it.
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


async def _error(client: OllamaClient, request: GenerationRequest | None = None) -> LLMError:
    with pytest.raises(LLMError) as info:
        await client.generate(request or _request())
    assert SECRET not in str(info.value)
    return info.value


async def test_generate_returns_text_tokens_latency_and_finish_reason(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(overrides={"total_duration": 250_000_000})

    result = await ollama.generate(
        _request("hello there world", temperature=0.2, top_p=0.9, max_tokens=50)
    )

    assert result.text == "echo: hello there world"
    assert result.input_tokens == 5  # "be brief" + "hello there world"
    assert result.output_tokens == 4
    assert result.latency_ms == 250.0
    assert result.finish_reason == "stop"
    assert result.model == MODEL
    stats = llm.stats()
    assert stats.last_path == "/api/chat"
    assert stats.last_body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there world"},
        ],
        "stream": False,
        "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 50},
    }


async def test_unset_options_are_not_sent(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    await ollama.generate(_request("hi", temperature=0.0))

    assert llm.stats().last_body is not None
    assert llm.stats().last_body["options"] == {"temperature": 0.0}  # type: ignore[index]


async def test_no_options_key_when_nothing_is_set(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    await ollama.generate(_request("hi"))

    assert "options" not in (llm.stats().last_body or {})


async def test_max_tokens_cut_gives_length_finish_reason(ollama: OllamaClient) -> None:
    result = await ollama.generate(_request("one two three four", max_tokens=2))

    assert result.text == "echo: one"
    assert result.output_tokens == 2
    assert result.finish_reason == "length"


async def test_latency_falls_back_to_wall_time_without_total_duration(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(delay_seconds=0.1, omit=("total_duration",))

    started = time.perf_counter()
    result = await ollama.generate(_request("hi"))
    outside_ms = (time.perf_counter() - started) * 1000

    # At least the server's delay, at most the call as the caller saw it.
    assert 100 <= result.latency_ms <= outside_ms


async def test_latency_is_the_servers_total_duration_when_it_reports_one(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(delay_seconds=0.1, overrides={"total_duration": 1_234_500_000})

    result = await ollama.generate(_request("hi"))

    assert result.latency_ms == 1234.5


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_busy_or_broken_server_is_retriable(
    ollama: OllamaClient, llm: FakeLLMServer, status: int
) -> None:
    llm.configure(mode="status", status=status)

    error = await _error(ollama)

    assert isinstance(error, LLMUnavailableError)
    assert (error.code, error.retriable, error.status_code) == ("llm_unavailable", True, status)


async def test_missing_model_says_to_pull_it(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    llm.configure(strict_models=True, models=("qwen2.5:0.5b",))

    error = await _error(ollama)

    assert isinstance(error, LLMModelNotFoundError)
    assert (error.code, error.retriable, error.status_code) == ("llm_model_not_found", False, 404)
    assert "not pulled" in error.message
    assert f"ollama pull {MODEL}" in error.message
    assert f"model '{MODEL}' not found" in error.message  # Ollama's own words, kept


async def test_bare_model_name_matches_latest_tag(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    llm.configure(strict_models=True, models=("llama3:latest",))

    result = await ollama.generate(GenerationRequest(model="llama3", messages=_request().messages))

    assert result.text == f"echo: {SECRET}"


async def test_other_4xx_is_a_rejected_request_with_truncated_server_text(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(mode="status", status=400, error="invalid option num_ctx " + "x" * 1000)

    error = await _error(ollama)

    assert isinstance(error, LLMRequestRejectedError)
    assert (error.code, error.retriable, error.status_code) == ("llm_bad_request", False, 400)
    assert "invalid option num_ctx" in error.message
    assert len(error.message) < 500


async def test_timeout_is_retriable(http: httpx.AsyncClient, llm: FakeLLMServer) -> None:
    # The stand-in holds the call and never answers it: only the client's timeout ends it.
    llm.configure(hold=True)
    client = OllamaClient(http, llm.url, timeout_seconds=0.2)

    try:
        async with asyncio.timeout(30):  # a safety net, far past the 0.2 s under test
            error = await _error(client)
    finally:
        llm.configure(hold=False)

    assert llm.stats().generation_calls == 1
    assert isinstance(error, LLMUnavailableError)
    assert "did not answer in time" in error.message


async def test_connection_refused_is_retriable(http: httpx.AsyncClient, closed_url: str) -> None:
    error = await _error(OllamaClient(http, closed_url, timeout_seconds=2))

    assert isinstance(error, LLMUnavailableError)
    assert f"unreachable at {closed_url}/api/chat" in error.message


async def test_connection_closed_mid_body_is_retriable(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(mode="close_mid_stream")

    error = await _error(ollama)

    assert isinstance(error, LLMUnavailableError)
    assert "RemoteProtocolError" in error.message


async def test_non_json_body_is_a_bad_response(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    llm.configure(mode="garbage")

    error = await _error(ollama)

    assert isinstance(error, LLMBadResponseError)
    assert (error.code, error.retriable) == ("llm_bad_response", False)
    assert "json_invalid" in error.message


@pytest.mark.parametrize(
    "change",
    [
        {"overrides": {"done": False}},
        {"omit": ("message",)},
        {"overrides": {"message": {"role": "assistant"}}},
        {"overrides": {"eval_count": "many"}},
    ],
    ids=["not_done", "no_message", "no_content", "wrong_type"],
)
async def test_incomplete_or_malformed_answer_is_a_bad_response(
    ollama: OllamaClient, llm: FakeLLMServer, change: dict[str, object]
) -> None:
    llm.configure(**change)

    error = await _error(ollama)

    assert isinstance(error, LLMBadResponseError)


async def test_fail_n_then_ok_counts_every_call(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    llm.configure(mode="fail_n_then_ok", fail_n=2, status=503)

    for _ in range(2):
        assert isinstance(await _error(ollama), LLMUnavailableError)
    result = await ollama.generate(_request())

    assert result.text == f"echo: {SECRET}"
    assert llm.stats().generation_calls == 3
    assert llm.stats().calls_for(SECRET) == 3


async def test_list_models_returns_pulled_names(ollama: OllamaClient, llm: FakeLLMServer) -> None:
    llm.configure(models=("llama3.2:3b", "qwen2.5:0.5b"))

    assert await ollama.list_models() == ["llama3.2:3b", "qwen2.5:0.5b"]
    assert llm.stats().last_path == "/api/tags"


async def test_ready_check_passes_when_model_is_pulled(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(models=("qwen2.5:0.5b", "llama3:latest", MODEL))

    await check_ollama_ready(ollama, MODEL)
    await check_ollama_ready(ollama, "llama3")  # a bare name means `:latest`

    # It did ask (a check that never calls would pass too), and the same list refuses others.
    assert llm.stats().last_path == "/api/tags"
    with pytest.raises(OllamaNotReadyError, match="mistral"):
        await check_ollama_ready(ollama, "mistral")


async def test_ready_check_names_the_missing_model(
    ollama: OllamaClient, llm: FakeLLMServer
) -> None:
    llm.configure(models=("llama3.2:1b",))

    with pytest.raises(OllamaNotReadyError) as info:
        await check_ollama_ready(ollama, "llama3.2")  # `llama3.2:latest`, not the 1b

    assert "ollama pull llama3.2" in info.value.message
    assert "llama3.2:1b" in info.value.message  # what is there, to spot a typo
    assert info.value.retriable is False


async def test_ready_check_says_unreachable_with_the_url(
    http: httpx.AsyncClient, closed_url: str
) -> None:
    client = OllamaClient(http, closed_url, timeout_seconds=2)

    with pytest.raises(OllamaNotReadyError) as info:
        await check_ollama_ready(client, MODEL)

    assert f"ollama is unreachable at {closed_url}" in info.value.message
    assert info.value.retriable is True
