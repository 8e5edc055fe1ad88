"""Any OpenAI-compatible `/v1/chat/completions` server (OpenAI, vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, NonNegativeInt

from shared.llm.base import GenerationRequest, GenerationResult, LLMBadResponseError
from shared.llm.transport import parse_body, raise_for_status, request_timeout, send

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

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """One chat completion; raises an `LLMError` subclass on any failure."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": False,
        }
        # Unset values are left out rather than sent as null, which some servers reject.
        for key, value in (
            ("temperature", request.temperature),
            ("top_p", request.top_p),
            ("max_tokens", request.max_tokens),
        ):
            if value is not None:
                body[key] = value
        started = time.perf_counter()
        response = await send(
            self._http,
            "POST",
            f"{self._root}/chat/completions",
            provider=PROVIDER,
            http_timeout=self._timeout,
            json_body=body,
            headers=self._headers,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        raise_for_status(
            response,
            provider=PROVIDER,
            not_found=f"model '{request.model}' does not exist at {self._root}",
        )
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
