"""The contract every LLM provider client fulfils, and its error classification."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Receives each piece of text as the model streams it. Called on the event loop between two
# reads of the answer, so it must return at once (buffer, never await).
TextSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float
    finish_reason: str | None
    model: str


class LLMError(Exception):
    """A failed generation. `retriable` tells the worker whether trying again can help."""

    code: str = "llm_error"
    retriable: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class LLMUnavailableError(LLMError):
    """Connection refused, timeout, 5xx, busy: the server may answer later."""

    code = "llm_unavailable"
    retriable = True


class LLMModelNotFoundError(LLMError):
    """The server does not have the requested model."""

    code = "llm_model_not_found"


class LLMRequestRejectedError(LLMError):
    """The server refused the request as malformed (4xx other than 404/408/429)."""

    code = "llm_bad_request"


class LLMBadResponseError(LLMError):
    """The server answered something that is not a valid generation."""

    code = "llm_bad_response"


class LLMClient(Protocol):
    """One provider. Implementations share one httpx client made at process start."""

    provider: str

    async def generate(
        self, request: GenerationRequest, on_text: TextSink | None = None
    ) -> GenerationResult:
        """The whole answer. With `on_text`, the model streams and each piece of text goes to
        `on_text` as it arrives; the result and the errors are the same either way."""
        ...

    async def list_models(self) -> list[str]: ...
