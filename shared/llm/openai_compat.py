"""Any OpenAI-compatible `/v1/chat/completions` server (OpenAI, vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from httpx_sse import EventSource
from pydantic import BaseModel, NonNegativeInt

from shared.llm.base import (
    GenerationRequest,
    GenerationResult,
    LLMBadResponseError,
    LLMUnavailableError,
    TextSink,
)
from shared.llm.transport import (
    MAX_ERROR_TEXT,
    cut_short,
    open_stream,
    parse_body,
    parse_piece,
    raise_for_status,
    request_timeout,
    send,
)

PROVIDER = "openai"


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Usage(BaseModel):
    prompt_tokens: NonNegativeInt | None = None
    completion_tokens: NonNegativeInt | None = None


class _ChatResponse(BaseModel):
    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None


class _Delta(BaseModel):
    content: str | None = None


class _StreamChoice(BaseModel):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _StreamError(BaseModel):
    message: str | None = None


class _StreamChunk(BaseModel):
    """One `data:` event: a piece of the message, the finish reason, or (with
    `stream_options.include_usage`) the usage, in a last chunk without choices."""

    model: str | None = None
    choices: list[_StreamChoice] = []
    usage: _Usage | None = None
    error: _StreamError | str | None = None


# The last `data:` of an OpenAI stream.
_DONE = "[DONE]"


class _ModelEntry(BaseModel):
    id: str


class _ModelsResponse(BaseModel):
    data: list[_ModelEntry]


def _api_root(base_url: str) -> str:
    # Operators paste either `https://host` or `https://host/v1`; both must work.
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else f"{root}/v1"


class OpenAICompatClient:
    """Talks to one OpenAI-compatible server through the process-wide httpx client."""

    provider = PROVIDER

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        timeout_seconds: float,
        api_key: str | None,
    ) -> None:
        self._http = http
        self._root = _api_root(base_url)
        self._timeout = request_timeout(timeout_seconds)
        # Kept only inside the header dict, which is never logged or put into messages.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def base_url(self) -> str:
        """The API root requests go to, always ending in `/v1`."""
        return self._root

    def __repr__(self) -> str:
        return f"OpenAICompatClient(base_url={self._root!r})"

    async def generate(
        self, request: GenerationRequest, on_text: TextSink | None = None
    ) -> GenerationResult:
        """One chat completion; raises an `LLMError` subclass on any failure.

        With `on_text` the answer is streamed (`stream: true`, Server-Sent Events, the usage
        asked for in a last chunk) and each piece of the message goes to `on_text`.
        """
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": on_text is not None,
        }
        if on_text is not None:
            body["stream_options"] = {"include_usage": True}
        # Unset values are left out rather than sent as null, which some servers reject.
        for key, value in (
            ("temperature", request.temperature),
            ("top_p", request.top_p),
            ("max_tokens", request.max_tokens),
        ):
            if value is not None:
                body[key] = value
        if on_text is not None:
            return await self._stream(request, body, on_text)
        started = time.perf_counter()
        response = await send(
            self._http,
            "POST",
            self._chat_url,
            provider=PROVIDER,
            http_timeout=self._timeout,
            json_body=body,
            headers=self._headers,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        raise_for_status(response, provider=PROVIDER, not_found=self._not_found(request))
        return _whole_answer(response, request, latency_ms)

    async def _stream(
        self, request: GenerationRequest, body: dict[str, Any], on_text: TextSink
    ) -> GenerationResult:
        url = self._chat_url
        started = time.perf_counter()
        async with open_stream(
            self._http,
            url,
            provider=PROVIDER,
            http_timeout=self._timeout,
            json_body=body,
            not_found=self._not_found(request),
            headers=self._headers,
        ) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                # A server that ignores `stream` answers the whole completion at once.
                await response.aread()
                result = _whole_answer(response, request, (time.perf_counter() - started) * 1000)
                on_text(result.text)
                return result
            answer = _StreamedAnswer(url)
            async for event in EventSource(response).aiter_sse():
                if event.data == _DONE:
                    answer.done = True
                    break
                if not event.data:
                    continue  # an event without data carries nothing (a keep-alive)
                chunk = parse_piece(event.data, _StreamChunk, provider=PROVIDER, url=url)
                answer.add(chunk, on_text)
            if not answer.done and answer.finish_reason is None:
                raise cut_short(PROVIDER, url, "its last chunk (finish_reason, [DONE])")
        return answer.result(request, (time.perf_counter() - started) * 1000)

    @property
    def _chat_url(self) -> str:
        return f"{self._root}/chat/completions"

    def _not_found(self, request: GenerationRequest) -> str:
        return f"model '{request.model}' does not exist at {self._root}"

    async def list_models(self) -> list[str]:
        """Ids of the models the server offers."""
        response = await send(
            self._http,
            "GET",
            f"{self._root}/models",
            provider=PROVIDER,
            http_timeout=self._timeout,
            headers=self._headers,
        )
        raise_for_status(response, provider=PROVIDER)
        return [entry.id for entry in parse_body(response, _ModelsResponse, provider=PROVIDER).data]


def _whole_answer(
    response: httpx.Response, request: GenerationRequest, latency_ms: float
) -> GenerationResult:
    parsed = parse_body(response, _ChatResponse, provider=PROVIDER)
    choice = parsed.choices[0] if parsed.choices else None
    if choice is None or choice.message.content is None:
        raise LLMBadResponseError(
            f"openai sent no text content from {response.request.url}",
            status_code=response.status_code,
        )
    usage = parsed.usage or _Usage()
    return GenerationResult(
        text=choice.message.content,
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        latency_ms=latency_ms,
        finish_reason=choice.finish_reason,
        model=parsed.model or request.model,
    )


class _StreamedAnswer:
    """What the chunks of one streamed completion add up to."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pieces: list[str] = []
        self.finish_reason: str | None = None
        self.usage = _Usage()
        self.model: str | None = None
        self.choices_seen = False
        self.done = False

    def add(self, chunk: _StreamChunk, on_text: TextSink) -> None:
        if chunk.error is not None:
            # The server failed after the answer had started (vLLM, llama.cpp report it so).
            error = chunk.error if isinstance(chunk.error, str) else chunk.error.message
            raise LLMUnavailableError(
                f"openai failed mid-answer at {self.url}: {(error or '?')[:MAX_ERROR_TEXT]}"
            )
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices[:1]:
            self.choices_seen = True
            if choice.delta is not None and choice.delta.content:
                self.pieces.append(choice.delta.content)
                on_text(choice.delta.content)
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason

    def result(self, request: GenerationRequest, latency_ms: float) -> GenerationResult:
        if not self.choices_seen:
            raise LLMBadResponseError(f"openai streamed no choices from {self.url}")
        return GenerationResult(
            text="".join(self.pieces),
            input_tokens=self.usage.prompt_tokens,
            output_tokens=self.usage.completion_tokens,
            latency_ms=latency_ms,
            finish_reason=self.finish_reason,
            model=self.model or request.model,
        )
