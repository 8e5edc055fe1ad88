"""The stand-in LLM server, one per run, reset before each test, and clients pointed at it."""

from __future__ import annotations

import socket

import httpx
import pytest

from shared.llm.ollama import OllamaClient
from tests.support.fake_llm import FakeLLMServer


@pytest.fixture
def llm(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    """The shared stand-in with default behaviour and zero counters."""
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture
def ollama(http: httpx.AsyncClient, llm: FakeLLMServer) -> OllamaClient:
    return OllamaClient(http, llm.url, timeout_seconds=5.0)


@pytest.fixture
def closed_url() -> str:
    """A loopback URL nothing listens on: the port was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
