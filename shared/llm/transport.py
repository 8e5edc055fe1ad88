"""HTTP plumbing both provider clients share: send or stream, classify the status, parse.

Every failure leaves here as an `LLMError` subclass, so the worker decides retry-or-fail
from `retriable` alone. Messages name the provider, the URL and the status, never the
prompt or the API key: they end up in logs and in the conversation row.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.llm.base import (
    LLMBadResponseError,
    LLMError,
    LLMModelNotFoundError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)

ModelT = TypeVar("ModelT", bound=BaseModel)

# Long enough for a useful server explanation, short enough to keep rows and logs tidy.
MAX_ERROR_TEXT = 300
# A dead host should fail fast even when generations are allowed minutes.
MAX_CONNECT_SECONDS = 10.0
# What to do about a server that refuses connections: the hint the worker logs at start, also
# in the conversation's error_message while it retries and once it has failed.
START_HINTS = {
    "ollama": "is Ollama running? `make llm_up` starts one, or fix OLLAMA_BASE_URL",
    "openai": "is the server running? `make run LLM=local` serves one, or fix OPENAI_BASE_URL",
}


@lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """`url` parsed once: a client calls the same few URLs, and httpx parses (and quotes) a
    string on every request; an `httpx.URL` it takes as it is."""
    return httpx.URL(url)


def request_timeout(timeout_seconds: float) -> httpx.Timeout:
    """The per-call timeout: `timeout_seconds` per read/write, connect capped lower."""
    return httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, MAX_CONNECT_SECONDS))


@contextmanager
def _classified(provider: str, url: str) -> Iterator[None]:
    """Turn httpx's failures into `LLMError`s: transport trouble is retriable, bad bytes not."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise LLMUnavailableError(
            f"{provider} did not answer in time at {url} ({type(exc).__name__})"
        ) from exc
    except httpx.DecodingError as exc:
        # The bytes arrived but do not decode (bad gzip, bad charset): not worth a retry.
        raise LLMBadResponseError(
            f"{provider} sent an undecodable response from {url} ({type(exc).__name__})"
        ) from exc
    except httpx.ConnectError as exc:
        hint = START_HINTS.get(provider)
        raise LLMUnavailableError(
            f"{provider} unreachable at {url} ({type(exc).__name__})"
            + (f": {hint}" if hint else "")
        ) from exc
    except httpx.TransportError as exc:
        # Reset, or closed before the body was complete: the server may answer next time.
        raise LLMUnavailableError(
            f"connection to {provider} at {url} failed ({type(exc).__name__})"
        ) from exc


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    http_timeout: httpx.Timeout,
    json_body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send one request and read the whole body; transport failures become retriable."""
    with _classified(provider, url):
        return await http.request(
            method, _parsed(url), json=json_body, headers=headers, timeout=http_timeout
        )


@asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    http_timeout: httpx.Timeout,
    json_body: dict[str, Any],
    not_found: str,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[httpx.Response]:
    """POST and hand over a 2xx response whose body is still to be read, piece by piece.

    Failures while connecting and while reading the body inside the `async with` are
    classified as `send` does: a stream cut mid-way is retriable. A non-2xx answer is read
    whole and raised as its `LLMError`.
    """
    with _classified(provider, url):
        async with http.stream(
            "POST", _parsed(url), json=json_body, headers=headers, timeout=http_timeout
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_status(response, provider=provider, not_found=not_found)
            yield response


def cut_short(provider: str, url: str, what: str) -> LLMUnavailableError:
    """A stream that ended cleanly but before its last message: retriable, like a reset."""
    return LLMUnavailableError(f"{provider} ended the stream from {url} before {what}")


def parse_piece(line: str, model: type[ModelT], *, provider: str, url: str) -> ModelT:
    """Validate one streamed JSON message (an NDJSON line, an SSE `data:`) against `model`."""
    try:
        return model.model_validate_json(line)
    except ValidationError as exc:
        raise LLMBadResponseError(
            f"{provider} sent an invalid stream message from {url}: {_problems(exc)}"
        ) from None


def error_text(response: httpx.Response) -> str:
    """The server's own explanation, from Ollama's `{"error": "..."}` or OpenAI's shape."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            error = error.get("message")
        text = error if isinstance(error, str) else response.text
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "..."
    return text or "(no details)"


def raise_for_status(
    response: httpx.Response,
    *,
    provider: str,
    not_found: str | None = None,
) -> None:
    """Map a non-2xx answer to the matching `LLMError`.

    `not_found` is the message for a 404, which on a generation call means the model is
    missing; without it (listing models) a 404 means a wrong base URL, a rejected request.
    """
    status = response.status_code
    if status < 400:
        return
    detail = error_text(response)
    url = str(response.request.url)
    error: LLMError
    if status >= 500 or status in (408, 429):
        error = LLMUnavailableError(
            f"{provider} is unavailable (HTTP {status} from {url}): {detail}", status_code=status
        )
    elif status == 404 and not_found is not None:
        error = LLMModelNotFoundError(f"{not_found} ({detail})", status_code=status)
    else:
        error = LLMRequestRejectedError(
            f"{provider} rejected the request (HTTP {status} from {url}): {detail}",
            status_code=status,
        )
    raise error


def parse_body(response: httpx.Response, model: type[ModelT], *, provider: str) -> ModelT:
    """Validate a 2xx body against `model`; non-JSON or a wrong shape is a bad response."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise LLMBadResponseError(
            f"{provider} sent an invalid response from {response.request.url}: {_problems(exc)}",
            status_code=response.status_code,
        ) from None


def _problems(exc: ValidationError) -> str:
    # Say which fields were wrong, never their values: they may hold generated text.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['type']}"
        for err in exc.errors()[:3]
    )
