"""HTTP plumbing both provider clients share: send, classify the status, parse the body.

Every failure leaves here as an `LLMError` subclass, so the worker decides retry-or-fail
from `retriable` alone. Messages name the provider, the URL and the status, never the
prompt or the API key: they end up in logs and in the conversation row.
"""

from __future__ import annotations

import json
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


def request_timeout(timeout_seconds: float) -> httpx.Timeout:
    """The per-call timeout: `timeout_seconds` per read/write, connect capped lower."""
    return httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, MAX_CONNECT_SECONDS))


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
    try:
        return await http.request(
            method, url, json=json_body, headers=headers, timeout=http_timeout
        )
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
        raise LLMUnavailableError(
            f"{provider} unreachable at {url} ({type(exc).__name__})"
        ) from exc
    except httpx.TransportError as exc:
        # Reset, or closed before the body was complete: the server may answer next time.
        raise LLMUnavailableError(
            f"connection to {provider} at {url} failed ({type(exc).__name__})"
        ) from exc


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
        # Say which fields were wrong, never their values: they may hold generated text.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['type']}"
            for err in exc.errors()[:3]
        )
        raise LLMBadResponseError(
            f"{provider} sent an invalid response from {response.request.url}: {problems}",
            status_code=response.status_code,
        ) from None
