"""`OpenAICompatClient` against llama.cpp's own server running SmolLM2-135M-Instruct.

What a stand-in cannot show: real token counts, a real chat template applied to our system
prompt, `max_tokens` really cutting generation, and llama.cpp's own error answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts import local_llm
from shared.llm.base import (
    ChatMessage,
    GenerationRequest,
    LLMRequestRejectedError,
    LLMUnavailableError,
)
from shared.llm.openai_compat import OpenAICompatClient
from shared.llm.prompts import build_messages
from tests.support.llama_server import require_model, spawn_server

pytestmark = pytest.mark.llm_real

MODEL = local_llm.MODEL_NAME


def ask(prompt: str, *, max_tokens: int, temperature: float = 0.0) -> GenerationRequest:
    # Greedy decoding: the same answer every run, so the assertions are stable.
    return GenerationRequest(
        model=MODEL,
        messages=(ChatMessage(role="user", content=prompt),),
        temperature=temperature,
        max_tokens=max_tokens,
    )


async def test_short_prompt_yields_text_and_usage(openai_client: OpenAICompatClient) -> None:
    result = await openai_client.generate(ask("Reply with one word: hello", max_tokens=16))

    assert result.text.strip()
    assert result.input_tokens is not None
    assert result.input_tokens > 0
    assert result.output_tokens is not None
    assert 0 < result.output_tokens <= 16
    assert result.finish_reason in {"stop", "length"}
    assert result.latency_ms > 0
    assert result.model == MODEL


async def test_max_tokens_cuts_the_answer(openai_client: OpenAICompatClient) -> None:
    request = ask("Write a long story about a lighthouse keeper.", max_tokens=5)

    result = await openai_client.generate(request)

    assert result.finish_reason == "length"
    assert result.output_tokens is not None
    assert 0 < result.output_tokens <= 5
    assert result.text.strip()


async def test_assembled_prompt_with_system_message(openai_client: OpenAICompatClient) -> None:
    """The worker's real message layout (system + user) goes through the chat template."""
    messages = build_messages(
        prompt="What is 2 + 2?", system_instruction="Answer briefly.", context=None
    )
    request = GenerationRequest(model=MODEL, messages=messages, temperature=0.0, max_tokens=24)

    result = await openai_client.generate(request)

    assert result.text.strip()
    # The system prompt is counted as input: far more than the user's few words.
    assert result.input_tokens is not None
    assert result.input_tokens > 30
    assert result.output_tokens is not None
    assert 0 < result.output_tokens <= 24


async def test_list_models_names_the_served_model(openai_client: OpenAICompatClient) -> None:
    models = await openai_client.list_models()

    assert len(models) >= 1
    assert MODEL in models


async def test_prompt_beyond_the_context_is_rejected(openai_client: OpenAICompatClient) -> None:
    """llama.cpp answers 400 before generating: a permanent failure, not worth a retry."""
    with pytest.raises(LLMRequestRejectedError) as caught:
        await openai_client.generate(ask("hello " * 1500, max_tokens=4))

    assert caught.value.status_code == 400
    assert not caught.value.retriable
    assert "context" in caught.value.message


async def test_stopped_server_is_unavailable(http: httpx.AsyncClient, tmp_path: Path) -> None:
    """A second, short-lived server: answers, is stopped, then the client says unavailable."""
    model = require_model()
    server: Any = await asyncio.to_thread(spawn_server, model, ctx=256, threads=1, log_dir=tmp_path)
    client = OpenAICompatClient(http, server.base_url, timeout_seconds=30.0, api_key=None)
    try:
        answered = await client.generate(ask("Say hi.", max_tokens=2))
        assert answered.text
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running

    with pytest.raises(LLMUnavailableError) as caught:
        await client.generate(ask("Say hi.", max_tokens=2))

    assert caught.value.retriable
    assert "unreachable" in caught.value.message
