"""One real llama.cpp server per run (SmolLM2-135M, n_ctx 1024, 1 thread) and clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.llm.openai_compat import OpenAICompatClient
from tests.support.llama_server import running_llm_server

# Generous for a 135M model: a loaded 2-core machine may be several times slower than idle.
CLIENT_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The running server (`base_url`, `model_name`); skipped or failed as `require_model` says."""
    # One thread: measured steady under load, where two threads stall each other.
    log_dir = tmp_path_factory.mktemp("llamacpp")
    with running_llm_server(ctx=1024, threads=1, log_dir=log_dir) as server:
        yield server


@pytest.fixture
def openai_client(http: httpx.AsyncClient, llm_server: Any) -> OpenAICompatClient:
    return OpenAICompatClient(
        http, llm_server.base_url, timeout_seconds=CLIENT_TIMEOUT_SECONDS, api_key=None
    )
