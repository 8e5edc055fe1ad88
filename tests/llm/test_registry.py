"""Which clients a process builds from settings, and that they reach their servers."""

from __future__ import annotations

from pydantic import SecretStr

from shared.llm.base import ChatMessage, GenerationRequest
from shared.llm.ollama import OllamaClient
from shared.llm.openai_compat import OpenAICompatClient
from shared.llm.registry import (
    SUPPORTED_PROVIDERS,
    create_http_client,
    make_llm_clients,
    served_providers,
)
from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer


def _settings(**values: object) -> Settings:
    values = {"OPENAI_BASE_URL": None, "OPENAI_API_KEY": None, **values}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


async def test_only_ollama_without_openai_base_url() -> None:
    settings = _settings(LLM_TIMEOUT_SECONDS=7.5)
    async with create_http_client(settings, process_name="tests") as http:
        clients = make_llm_clients(settings, http)

        assert set(clients) == {"ollama"} == served_providers(settings)
        assert isinstance(clients["ollama"], OllamaClient)
        assert http.timeout.read == 7.5
        assert http.headers["user-agent"] == "ai-eng-api/tests"


async def test_both_providers_reach_their_server(llm: FakeLLMServer) -> None:
    settings = _settings(
        OLLAMA_BASE_URL=llm.url, OPENAI_BASE_URL=llm.url, OPENAI_API_KEY=SecretStr("sk-reg")
    )
    request = GenerationRequest(model="m", messages=(ChatMessage(role="user", content="ping"),))
    async with create_http_client(settings) as http:
        clients = make_llm_clients(settings, http)
        assert set(clients) == SUPPORTED_PROVIDERS == served_providers(settings)
        assert isinstance(clients["openai"], OpenAICompatClient)

        for provider in ("ollama", "openai"):
            result = await clients[provider].generate(request)
            assert clients[provider].provider == provider
            assert result.text == "echo: ping"

    assert llm.stats().generation_calls == 2
    assert llm.stats().last_headers["authorization"] == "Bearer sk-reg"
