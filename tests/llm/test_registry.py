"""Which clients a process builds from settings, and that they reach their servers."""

from __future__ import annotations

from pydantic import SecretStr

from shared.llm.base import ChatMessage, GenerationRequest
from shared.llm.ollama import OllamaClient
from shared.llm.openai_compat import OpenAICompatClient
from shared.llm.registry import (
    CONNECTIONS_PER_SHARD,
    SUPPORTED_PROVIDERS,
    ShardedTransport,
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


async def test_the_client_spreads_its_connections_over_small_pools(llm: FakeLLMServer) -> None:
    """Each pool holds a few connections (httpcore looks at all of a pool's connections on
    every request), and together they keep the process's limits."""
    settings = _settings(OLLAMA_BASE_URL=llm.url, WORKER_MAX_JOBS=40)
    request = GenerationRequest(model="m", messages=(ChatMessage(role="user", content="ping"),))
    async with create_http_client(settings) as http:
        transport = http._transport
        assert isinstance(transport, ShardedTransport)
        assert len(transport.pools) == 3 == -(-40 // CONNECTIONS_PER_SHARD)
        client = make_llm_clients(settings, http)["ollama"]
        for _ in range(6):
            assert (await client.generate(request)).text == "echo: ping"
        # In turn: each pool has served two calls, on a connection it keeps alive.
        for pool in transport.pools:
            assert len(pool._pool.connections) == 1
    assert all(not pool._pool.connections for pool in transport.pools)
    assert llm.stats().generation_calls == 6
