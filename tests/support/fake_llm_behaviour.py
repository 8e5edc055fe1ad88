"""What the stand-in LLM server does, apart from HTTP: its settings, counters and bodies.

Kept free of sockets so the server module stays about transport, and so the same
`Behaviour` JSON drives the in-process server and the separate process alike.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal[
    "ok", "slow", "status", "garbage", "garbage_mid_stream", "close_mid_stream", "fail_n_then_ok"
]
Api = Literal["ollama_chat", "ollama_generate", "openai"]

DEFAULT_MODELS = ("llama3.2:3b",)
GARBAGE = b"<html><body>502 definitely not JSON</body></html>\x00\xff"


class Behaviour(BaseModel):
    """Runtime settings; `POST /_control` merges the fields it is given into these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "ok"
    # Applies in every mode when above zero; `slow` is simply `ok` with a delay.
    delay_seconds: float = Field(default=0.0, ge=0)
    # The status of `status` mode, and of the failures of `fail_n_then_ok`.
    status: int = Field(default=503, ge=400, le=599)
    error: str | None = None  # the error text; a sensible default per status otherwise
    fail_n: int = Field(default=0, ge=0)
    reply: str | None = None  # fixed reply text instead of "echo: <prompt>"
    models: tuple[str, ...] = DEFAULT_MODELS
    strict_models: bool = False  # 404 for models not in `models`, like real Ollama
    # Merged into / removed from the final JSON object, to fake odd but well-formed answers.
    overrides: dict[str, Any] = Field(default_factory=dict)
    omit: tuple[str, ...] = ()
    # Calls that arrive while `hold` is on wait (counted, connection open) until it is turned
    # off: a test acts while a generation is surely in flight, then lets it finish.
    hold: bool = False
    # With `hold`: a streamed answer sends this many pieces first and then waits to be
    # released, so a test can act while part of the answer is surely out.
    hold_after_pieces: int = Field(default=0, ge=0)
    # Seconds between the bytes of an answer (of a JSON body, or of each streamed message): a
    # server that keeps the connection alive while taking ever so long.
    drip_seconds: float = Field(default=0.0, ge=0)


@dataclass(frozen=True)
class Stats:
    """A snapshot of what the server has been asked."""

    generation_calls: int = 0
    calls_by_prompt: dict[str, int] = field(default_factory=dict)
    calls_by_model: dict[str, int] = field(default_factory=dict)
    last_path: str | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    last_body: dict[str, Any] | None = None
    # Held calls whose client closed the connection while they waited (a generation aborted).
    client_hangups: int = 0
    # The most generation calls this server was handling at once.
    max_in_flight: int = 0

    def calls_for(self, prompt: str) -> int:
        """How many generation calls carried `prompt` as their last user message."""
        return self.calls_by_prompt.get(prompt, 0)

    def to_json(self) -> dict[str, Any]:
        """The `GET /_stats` body."""
        return {
            "generation_calls": self.generation_calls,
            "calls_by_prompt": self.calls_by_prompt,
            "calls_by_model": self.calls_by_model,
            "last_path": self.last_path,
            "last_headers": self.last_headers,
            "last_body": self.last_body,
            "client_hangups": self.client_hangups,
            "max_in_flight": self.max_in_flight,
        }


@dataclass(frozen=True)
class Decision:
    """What to do with one generation call, fixed when the call arrives."""

    behaviour: Behaviour
    fail_status: int | None


class FakeLLMState:
    """Behaviour and counters, shared by the server's request threads behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Default behaviour, zero counters."""
        with self._lock:
            self._behaviour = Behaviour()
            # Held calls take tickets in arrival order; a ticket below `_released` may go on.
            self._gate = threading.Condition(self._lock)
            self._tickets = 0
            self._released = 0
            self._failures_left = 0
            self._calls = 0
            self._prompts: Counter[str] = Counter()
            self._models: Counter[str] = Counter()
            self._last: tuple[str | None, dict[str, str], dict[str, Any] | None] = (None, {}, None)
            self._hangups = 0
            self._in_flight = 0
            self._max_in_flight = 0

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    def configure(self, **changes: Any) -> Behaviour:
        """Merge `changes` into the behaviour; raises `pydantic.ValidationError` if invalid."""
        with self._lock:
            merged = Behaviour.model_validate({**self._behaviour.model_dump(), **changes})
            self._behaviour = merged
            if "fail_n" in changes or "mode" in changes:
                self._failures_left = merged.fail_n if merged.mode == "fail_n_then_ok" else 0
            if not merged.hold:
                self._released = self._tickets
                self._gate.notify_all()
            return merged

    def take_ticket(self) -> int:
        """A held call's place in line (see `wait_released`)."""
        with self._lock:
            self._tickets += 1
            return self._tickets - 1

    def wait_released(self, ticket: int, timeout: float) -> bool:
        """Whether the held call with `ticket` may go on, waiting up to `timeout` seconds."""
        with self._gate:
            return self._gate.wait_for(lambda: ticket < self._released, timeout)

    def release(self, count: int = 1) -> None:
        """Let the next `count` held calls go on, oldest first; later ones stay held."""
        with self._gate:
            self._released = min(self._released + count, self._tickets)
            self._gate.notify_all()

    def see(self, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> None:
        """Remember the latest request, so tests can check what the client sent."""
        with self._lock:
            self._last = (path, headers, body)

    def begin_call(self, *, prompt: str, model: str) -> Decision:
        """Count a generation call and decide, atomically, whether it fails."""
        with self._lock:
            self._calls += 1
            self._prompts[prompt] += 1
            self._models[model] += 1
            b = self._behaviour
            if b.mode == "status":
                return Decision(b, b.status)
            if b.mode == "fail_n_then_ok" and self._failures_left > 0:
                self._failures_left -= 1
                return Decision(b, b.status)
            return Decision(b, None)

    def call_started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def call_ended(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def client_hung_up(self) -> None:
        with self._lock:
            self._hangups += 1

    def stats(self) -> Stats:
        """A copy of the counters and the last request."""
        with self._lock:
            return Stats(
                self._calls,
                dict(self._prompts),
                dict(self._models),
                *self._last,
                client_hangups=self._hangups,
                max_in_flight=self._max_in_flight,
            )


def canonical_model(name: str) -> str:
    """Ollama's reading of a bare model name: `llama3` is `llama3:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def error_body(api: Api, status: int, text: str) -> dict[str, Any]:
    """An error in the shape the imitated server uses."""
    if api == "openai":
        kind = "model_not_found" if status == 404 else "server_error"
        return {"error": {"message": text, "type": "invalid_request_error", "code": kind}}
    return {"error": text}


def words(text: str) -> int:
    """The stand-in's token count: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True)
class Reply:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str


def compose_reply(behaviour: Behaviour, *, prompt: str, inputs: list[str], limit: Any) -> Reply:
    """The deterministic answer: `echo: <prompt>`, cut to `limit` words if one is set."""
    text = behaviour.reply if behaviour.reply is not None else f"echo: {prompt}"
    reason = "stop"
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        pieces = text.split()
        if len(pieces) > limit:
            text, reason = " ".join(pieces[:limit]), "length"
    return Reply(text, sum(words(i) for i in inputs), words(text), reason)


def stream_pieces(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to `text`, as a streaming server sends."""
    return re.findall(r"\S+\s*", text) or [text]


def finish(body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
    """Apply `overrides` and `omit` to a final JSON object."""
    merged = {**body, **behaviour.overrides}
    for key in behaviour.omit:
        merged.pop(key, None)
    return merged


def _now() -> str:
    return datetime.now(UTC).isoformat()


def ollama_piece(api: Api, model: str, text: str) -> dict[str, Any]:
    """One streamed Ollama chunk (`message` for chat, `response` for generate)."""
    if api == "ollama_generate":
        return {"model": model, "created_at": _now(), "response": text, "done": False}
    message = {"role": "assistant", "content": text}
    return {"model": model, "created_at": _now(), "message": message, "done": False}


def ollama_final(reply: Reply, duration_ns: int) -> dict[str, Any]:
    """The fields Ollama adds to its last (`done: true`) object."""
    return {
        "done": True,
        "done_reason": reply.finish_reason,
        "total_duration": duration_ns,
        "load_duration": 0,
        "prompt_eval_count": reply.input_tokens,
        "prompt_eval_duration": 0,
        "eval_count": reply.output_tokens,
        "eval_duration": duration_ns,
    }


def openai_body(model: str, reply: Reply) -> dict[str, Any]:
    """A complete non-streaming chat completion."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }


def openai_chunks(model: str, reply: Reply, *, include_usage: bool) -> list[dict[str, Any]]:
    """A streamed chat completion: the role, a chunk per piece, the finish reason, and the
    usage in a last chunk without choices when `stream_options.include_usage` asked for it."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in stream_pieces(reply.text)]
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        usage = openai_body(model, reply)["usage"]
        chunks.append({**chunk({}), "choices": [], "usage": usage})
    return chunks
