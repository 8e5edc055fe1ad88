"""Ollama's `/api/chat`, whole or streamed as NDJSON, behind the `LLMClient` contract."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, NonNegativeInt

from shared.llm.base import (
    GenerationRequest,
    GenerationResult,
    LLMBadResponseError,
    LLMError,
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

PROVIDER = "ollama"


class _Message(BaseModel):
    content: str


class _ChatResponse(BaseModel):
    model: str | None = None
    message: _Message | None = None
    done: bool | None = None
    done_reason: str | None = None
    prompt_eval_count: NonNegativeInt | None = None
    eval_count: NonNegativeInt | None = None
    total_duration: NonNegativeInt | None = None  # nanoseconds


class _StreamChunk(_ChatResponse):
    """One NDJSON line: a piece of the message, the last one (`done`) with the counts, or an
    `error` Ollama reports after the answer has started."""

    error: str | None = None


class _Tag(BaseModel):
    name: str


class _TagsResponse(BaseModel):
    models: list[_Tag]


class OllamaNotReadyError(LLMError):
    """The start-up check failed; the message says what the operator should do."""

    code = "llm_not_ready"

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        # Unreachable may fix itself (Ollama still starting); a missing model will not.
        self.retriable = retriable


def _options(request: GenerationRequest) -> dict[str, Any]:
    # Only what the caller set: Ollama then applies the model's own Modelfile defaults.
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    return options


def _result(
    last: _ChatResponse, text: str, request: GenerationRequest, elapsed_ms: float
) -> GenerationResult:
    """The answer from Ollama's last object (the whole answer, or the stream's `done` line)."""
    latency_ms = elapsed_ms
    if last.total_duration is not None:
        latency_ms = last.total_duration / 1_000_000
    return GenerationResult(
        text=text,
        input_tokens=last.prompt_eval_count,
        output_tokens=last.eval_count,
        latency_ms=latency_ms,
        finish_reason=last.done_reason,
        model=last.model or request.model,
    )


def _not_pulled(model: str, base_url: str) -> str:
    return f"model '{model}' is not pulled on ollama at {base_url}; run `ollama pull {model}`"


class OllamaClient:
    """Talks to one Ollama server through the process-wide httpx client."""

    provider = PROVIDER

    def __init__(self, http: httpx.AsyncClient, base_url: str, timeout_seconds: float) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._timeout = request_timeout(timeout_seconds)

    async def generate(
        self, request: GenerationRequest, on_text: TextSink | None = None
    ) -> GenerationResult:
        """One chat completion; raises an `LLMError` subclass on any failure.

        With `on_text` the answer is streamed (`stream: true`, one JSON object per line) and
        each piece of the message goes to `on_text` as it arrives.
        """
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": on_text is not None,
        }
        options = _options(request)
        if options:
            body["options"] = options
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
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        raise_for_status(
            response, provider=PROVIDER, not_found=_not_pulled(request.model, self.base_url)
        )
        parsed = parse_body(response, _ChatResponse, provider=PROVIDER)
        if parsed.done is False or parsed.message is None:
            raise LLMBadResponseError(
                f"ollama sent an incomplete response from {response.request.url} "
                f"(done={parsed.done}, message {'present' if parsed.message else 'missing'})",
                status_code=response.status_code,
            )
        return _result(parsed, parsed.message.content, request, elapsed_ms)

    async def _stream(
        self, request: GenerationRequest, body: dict[str, Any], on_text: TextSink
    ) -> GenerationResult:
        url = self._chat_url
        pieces: list[str] = []
        started = time.perf_counter()
        async with open_stream(
            self._http,
            url,
            provider=PROVIDER,
            http_timeout=self._timeout,
            json_body=body,
            not_found=_not_pulled(request.model, self.base_url),
        ) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                chunk = parse_piece(line, _StreamChunk, provider=PROVIDER, url=url)
                if chunk.error is not None:
                    # The model failed after it had started (out of memory, runner crashed).
                    raise LLMUnavailableError(
                        f"ollama failed mid-answer at {url}: {chunk.error[:MAX_ERROR_TEXT]}"
                    )
                if chunk.message is not None and chunk.message.content:
                    pieces.append(chunk.message.content)
                    on_text(chunk.message.content)
                if chunk.done:
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    return _result(chunk, "".join(pieces), request, elapsed_ms)
        raise cut_short(PROVIDER, url, "its last message (done: true)")

    @property
    def _chat_url(self) -> str:
        return f"{self.base_url}/api/chat"

    async def list_models(self) -> list[str]:
        """Names of the models pulled on this server, e.g. `llama3.2:3b`."""
        response = await send(
            self._http,
            "GET",
            f"{self.base_url}/api/tags",
            provider=PROVIDER,
            http_timeout=self._timeout,
        )
        raise_for_status(response, provider=PROVIDER)
        return [tag.name for tag in parse_body(response, _TagsResponse, provider=PROVIDER).models]


def _canonical(name: str) -> str:
    # Ollama reads a bare name as `:latest`; a colon before the last `/` is a registry port.
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


async def check_ollama_ready(client: OllamaClient, default_model: str) -> None:
    """Raise `OllamaNotReadyError` unless Ollama answers and has `default_model` pulled."""
    try:
        models = await client.list_models()
    except LLMUnavailableError as exc:
        raise OllamaNotReadyError(
            f"ollama is unreachable at {client.base_url}: start it (`ollama serve`) or fix "
            f"OLLAMA_BASE_URL ({exc.message})",
            retriable=True,
        ) from exc
    except LLMError as exc:
        raise OllamaNotReadyError(
            f"the server at {client.base_url} does not answer like ollama: {exc.message}",
            retriable=False,
        ) from exc
    wanted = _canonical(default_model)
    if not any(_canonical(name) == wanted for name in models):
        pulled = ", ".join(sorted(models)[:10]) or "none"
        raise OllamaNotReadyError(
            f"{_not_pulled(default_model, client.base_url)} (pulled: {pulled})",
            retriable=False,
        )
