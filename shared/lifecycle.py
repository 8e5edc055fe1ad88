"""A conversation's lifecycle: its states, the moves between them, and what each move writes.

    pending ──claim──► running ──► completed
       ▲                  │  └───► failed            (permanent error, or out of attempts)
       └──── retry ───────┤                          (transient error: wait, then again)
       └──── hand back ───┘                          (worker shutdown: the attempt is not spent)
    pending | running ──cancel / soft delete──► cancelled

The claim (in `ConversationRepository.claim`) hands out the attempt number that fences every
later write of that attempt. An attempt ends with one `Outcome`, and every outcome, the
worker's and the API's cancel alike, is written by `ConversationRepository.settle`: this
module says which columns each outcome sets, and nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.sql.expression import literal

from shared.models import Conversation, ConversationStatus

# Error messages come from model servers and exceptions; the column is text, the reader a person.
MAX_ERROR_MESSAGE_CHARS = 2000
# PostgreSQL text cannot hold NUL; a model that emits one still gets its answer stored, the
# character shown as the replacement mark.
_NUL, _REPLACEMENT = "\x00", "\ufffd"


def storable_text(text: str) -> str:
    """A model's text as PostgreSQL can store it (a NUL becomes U+FFFD)."""
    return text.replace(_NUL, _REPLACEMENT)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt (or a cancel) ends; make one with the class methods."""

    status: ConversationStatus
    response: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    prompt_version: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_in_seconds: float | None = None
    hand_back: bool = False

    @classmethod
    def completed(
        cls,
        *,
        text: str,
        input_tokens: int | None,
        output_tokens: int | None,
        latency_ms: float,
        finish_reason: str | None,
        prompt_version: str,
    ) -> Outcome:
        return cls(
            ConversationStatus.COMPLETED,
            response=storable_text(text),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=round(latency_ms, 3),
            finish_reason=finish_reason,
            prompt_version=prompt_version,
        )

    @classmethod
    def failed(cls, code: str, message: str) -> Outcome:
        return cls(
            ConversationStatus.FAILED,
            error_code=code,
            error_message=message[:MAX_ERROR_MESSAGE_CHARS],
        )

    @classmethod
    def retry(cls, code: str, message: str, *, delay_seconds: float) -> Outcome:
        """Back to pending with the error, not to be queued again before the delay."""
        return cls(
            ConversationStatus.PENDING,
            error_code=code,
            error_message=message[:MAX_ERROR_MESSAGE_CHARS],
            retry_in_seconds=delay_seconds,
        )

    @classmethod
    def handed_back(cls) -> Outcome:
        """Back to pending as if the attempt never started (a worker shutting down)."""
        return cls(ConversationStatus.PENDING, hand_back=True)

    @classmethod
    def awaiting_capacity(cls, *, delay_seconds: float) -> Outcome:
        """Every model server is full: back to pending with the attempt given back, the job
        to come back after the delay (no error: nothing failed)."""
        return cls(ConversationStatus.PENDING, hand_back=True, retry_in_seconds=delay_seconds)

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls(ConversationStatus.CANCELLED)

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens

    def columns(self) -> dict[str, Any]:
        """The row's new values: the only place an outcome becomes column names."""
        now = func.now()
        values: dict[str, Any] = {
            "status": self.status.value,
            "updated_at": now,
            "lease_expires_at": None,
        }
        if self.status.is_terminal:
            values["completed_at"] = now
        if self.status is ConversationStatus.COMPLETED:
            values.update(
                response=self.response,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                total_tokens=self.total_tokens,
                latency_ms=self.latency_ms,
                finish_reason=self.finish_reason,
                prompt_version=self.prompt_version,
                error_code=None,
                error_message=None,
            )
        elif self.error_code is not None:
            values.update(error_code=self.error_code, error_message=self.error_message)
        if self.retry_in_seconds is not None:
            values["next_attempt_at"] = now + literal(timedelta(seconds=self.retry_in_seconds))
        if self.hand_back:
            values["attempts"] = Conversation.attempts - 1
        return values
