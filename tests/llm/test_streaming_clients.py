"""Both clients streaming from the stand-in: Ollama's NDJSON and OpenAI's Server-Sent Events.

The pieces reach the sink in order and add up to the answer; the result (tokens, finish
reason) is the one the whole answer gives; and every failure keeps its classification: a
stream cut mid-way or ended early is retriable, a line that is not JSON is a bad response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from shared.llm.base import (
    ChatMessage,
    GenerationRequest,
    LLMBadResponseError,
    LLMClient,
    LLMError,
    LLMModelNotFoundError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)
from shared.llm.ollama import OllamaClient
from shared.llm.openai_compat import OpenAICompatClient
from tests.support.fake_llm import FakeLLMServer

MODEL = "llama3.2:3b"
PROMPT = "the quick brown fox"
ANSWER = f"echo: {PROMPT}"
SECRET = "the launch codes are 7f3a9c"

MakeClient = Callable[[httpx.AsyncClient, str, float], LLMClient]


def _ollama(http: httpx.AsyncClient, url: str, timeout: float) -> LLMClient:
    return OllamaClient(http, url, timeout_seconds=timeout)


def _openai(http: httpx.AsyncClient, url: str, timeout: float) -> LLMClient:
    return OpenAICompatClient(http, url, timeout_seconds=timeout, api_key="sk-test")


@pytest.fixture(params=[_ollama, _openai], ids=["ollama", "openai"])
def make_client(request: pytest.FixtureRequest) -> MakeClient:
    maker: MakeClient = request.param
    return maker


@pytest.fixture
def client(make_client: MakeClient, http: httpx.AsyncClient, llm: FakeLLMServer) -> LLMClient:
    return make_client(http, llm.url, 5.0)


def _request(prompt: str = PROMPT, **options: float | int | None) -> GenerationRequest:
    return GenerationRequest(
        model=MODEL,
        messages=(
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content=prompt),
        ),
        **options,  # type: ignore[arg-type]
    )


async def _streamed_error(
    client: LLMClient, pieces: list[str] | None = None, prompt: str = SECRET
) -> LLMError:
    with pytest.raises(LLMError) as info:
        await client.generate(_request(prompt), (pieces if pieces is not None else []).append)
    assert prompt not in str(info.value)
    return info.value


async def test_pieces_arrive_in_order_and_add_up_to_the_answer(
    client: LLMClient, llm: FakeLLMServer
) -> None:
    pieces: list[str] = []

    result = await client.generate(_request(), pieces.append)

    assert pieces == ["echo: ", "the ", "quick ", "brown ", "fox"]
    assert result.text == "".join(pieces) == ANSWER
    assert (result.input_tokens, result.output_tokens) == (6, 5)  # words, as the stand-in counts
    assert result.finish_reason == "stop"
    assert result.model == MODEL
    assert result.latency_ms > 0
    body = llm.stats().last_body
    assert body is not None
    assert body["stream"] is True


async def test_the_streamed_result_is_the_whole_answers_result(client: LLMClient) -> None:
    whole = await client.generate(_request(max_tokens=3))
    streamed = await client.generate(_request(max_tokens=3), lambda piece: None)

    assert (streamed.text, streamed.input_tokens, streamed.output_tokens) == (
        whole.text,
        whole.input_tokens,
        whole.output_tokens,
    )
    assert streamed.finish_reason == whole.finish_reason == "length"


async def test_openai_asks_for_the_usage_in_the_stream(
    http: httpx.AsyncClient, llm: FakeLLMServer
) -> None:
    await _openai(http, llm.url, 5.0).generate(_request(), lambda piece: None)

    body = llm.stats().last_body
    assert body is not None
    assert body["stream_options"] == {"include_usage": True}


async def test_openai_without_a_usage_chunk_gives_unknown_token_counts(
    http: httpx.AsyncClient, llm: FakeLLMServer
) -> None:
    llm.configure(omit=("usage",))

    result = await _openai(http, llm.url, 5.0).generate(_request(), lambda piece: None)

    assert (result.text, result.input_tokens, result.output_tokens) == (ANSWER, None, None)


async def test_ollama_latency_is_the_done_lines_total_duration(
    http: httpx.AsyncClient, llm: FakeLLMServer
) -> None:
    llm.configure(overrides={"total_duration": 1_234_500_000})

    result = await _ollama(http, llm.url, 5.0).generate(_request(), lambda piece: None)

    assert result.latency_ms == 1234.5


async def test_a_stream_cut_mid_way_is_retriable_after_the_first_pieces(
    client: LLMClient, llm: FakeLLMServer
) -> None:
    llm.configure(mode="close_mid_stream")
    pieces: list[str] = []

    error = await _streamed_error(client, pieces, prompt=f"{SECRET} and some more words")

    assert isinstance(error, LLMUnavailableError)
    assert error.retriable is True
    assert "RemoteProtocolError" in error.message
    # What arrived before the cut was passed on: the sink sees a prefix of the answer.
    assert pieces
    assert f"echo: {SECRET} and some more words".startswith("".join(pieces))


async def test_an_ollama_stream_that_ends_before_its_done_line_is_retriable(
    http: httpx.AsyncClient, llm: FakeLLMServer
) -> None:
    llm.configure(overrides={"done": False})

    error = await _streamed_error(_ollama(http, llm.url, 5.0))

    assert isinstance(error, LLMUnavailableError)
    assert "before its last message" in error.message


async def test_a_garbage_line_mid_stream_is_a_bad_response(
    client: LLMClient, llm: FakeLLMServer
) -> None:
    llm.configure(mode="garbage_mid_stream")
    pieces: list[str] = []

    error = await _streamed_error(client, pieces, prompt=f"{SECRET} and some more words")

    assert isinstance(error, LLMBadResponseError)
    assert (error.code, error.retriable) == ("llm_bad_response", False)
    assert "invalid stream message" in error.message
    assert pieces  # it broke after the answer had started


async def test_a_garbage_body_is_a_bad_response(client: LLMClient, llm: FakeLLMServer) -> None:
    llm.configure(mode="garbage")

    error = await _streamed_error(client)

    assert isinstance(error, LLMBadResponseError)
    assert error.retriable is False


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (503, LLMUnavailableError),
        (429, LLMUnavailableError),
        (404, LLMModelNotFoundError),
        (400, LLMRequestRejectedError),
    ],
)
async def test_an_error_status_is_classified_as_without_streaming(
    client: LLMClient, llm: FakeLLMServer, status: int, kind: type[LLMError]
) -> None:
    llm.configure(mode="status", status=status, error=f"server says {status}")
    pieces: list[str] = []

    error = await _streamed_error(client, pieces)

    assert type(error) is kind
    assert (error.status_code, error.retriable) == (status, kind is LLMUnavailableError)
    assert f"server says {status}" in error.message
    assert pieces == []


async def test_a_stream_that_stalls_past_the_read_timeout_is_retriable(
    make_client: MakeClient, http: httpx.AsyncClient, llm: FakeLLMServer
) -> None:
    # Two pieces out, then the server goes quiet: only the per-read timeout ends the call.
    llm.configure(hold=True, hold_after_pieces=2)
    pieces: list[str] = []
    try:
        async with asyncio.timeout(30):  # a safety net, far past the 0.3 s under test
            error = await _streamed_error(make_client(http, llm.url, 0.3), pieces)
    finally:
        llm.configure(hold=False)

    assert isinstance(error, LLMUnavailableError)
    assert "did not answer in time" in error.message
    assert pieces == ["echo: ", "the "]


async def test_a_held_stream_goes_on_once_released(client: LLMClient, llm: FakeLLMServer) -> None:
    llm.configure(hold=True, hold_after_pieces=2)
    pieces: list[str] = []
    arrived = asyncio.Event()

    def sink(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 2:
            arrived.set()

    call = asyncio.create_task(client.generate(_request(), sink))
    try:
        async with asyncio.timeout(10):
            await arrived.wait()
        assert not call.done()
        assert pieces == ["echo: ", "the "]
        llm.release()
        result = await asyncio.wait_for(call, 10)
    finally:
        llm.configure(hold=False)

    assert result.text == "".join(pieces) == ANSWER


# Shapes the stand-in does not produce, from a scripted transport.


def _scripted(content_type: str, body: bytes) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_an_error_ollama_reports_mid_stream_is_retriable() -> None:
    lines = [
        {"model": MODEL, "message": {"role": "assistant", "content": "echo"}, "done": False},
        {"error": "model runner has unexpectedly stopped"},
    ]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    pieces: list[str] = []
    async with _scripted("application/x-ndjson", body) as http:
        error = await _streamed_error(_ollama(http, "http://ollama.test", 5.0), pieces)

    assert isinstance(error, LLMUnavailableError)
    assert "unexpectedly stopped" in error.message
    assert pieces == ["echo"]


async def test_an_error_event_mid_stream_is_retriable() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "echo"}, "finish_reason": None}]}
    body = (
        f"data: {json.dumps(chunk)}\n\n"
        'data: {"error": {"message": "out of memory", "type": "server_error"}}\n\n'
    ).encode()
    async with _scripted("text/event-stream", body) as http:
        error = await _streamed_error(_openai(http, "http://vllm.test", 5.0))

    assert isinstance(error, LLMUnavailableError)
    assert "out of memory" in error.message


async def test_an_sse_stream_that_ends_without_finishing_is_retriable() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "echo"}, "finish_reason": None}]}
    body = f": a comment\n\ndata: {json.dumps(chunk)}\n\n".encode()
    async with _scripted("text/event-stream; charset=utf-8", body) as http:
        error = await _streamed_error(_openai(http, "http://vllm.test", 5.0))

    assert isinstance(error, LLMUnavailableError)
    assert "before its last chunk" in error.message


async def test_a_server_that_ignores_stream_answers_whole_and_the_sink_gets_it_at_once() -> None:
    whole = {
        "model": MODEL,
        "choices": [{"message": {"content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 5},
    }
    pieces: list[str] = []
    async with _scripted("application/json", json.dumps(whole).encode()) as http:
        client = _openai(http, "http://old.test", 5.0)
        result = await client.generate(_request(), pieces.append)

    assert pieces == [ANSWER]
    assert (result.text, result.input_tokens, result.output_tokens) == (ANSWER, 6, 5)
