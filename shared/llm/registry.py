"""Build the process's one httpx client and the LLM clients that share it."""

from __future__ import annotations

import importlib.util
import itertools
import sys

import httpx

from shared.llm.base import LLMClient
from shared.llm.ollama import OllamaClient
from shared.llm.openai_compat import OpenAICompatClient
from shared.llm.transport import request_timeout
from shared.settings import Settings

SUPPORTED_PROVIDERS = frozenset({"ollama", "openai"})


def _remember_sniffio_missing() -> None:
    """httpcore tries `import sniffio` each time it sets up a lock or an event (several per
    request) and takes asyncio when the import fails. Without sniffio installed (anyio no
    longer needs it) every such try searches `sys.path` again; a `None` in `sys.modules` makes
    it fail at once, with the same outcome. Nothing changes when sniffio is installed."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]  # the documented import block


def create_http_client(settings: Settings, *, process_name: str | None = None) -> httpx.AsyncClient:
    """One pooled client per process, made at start-up and closed (`aclose`) at shutdown.

    The pool is sized to the worker's concurrency with room to spare, so a full set of jobs
    never waits on a connection; `process_name` tags the User-Agent for server-side logs.
    """
    _remember_sniffio_missing()
    concurrency = max(settings.WORKER_MAX_JOBS, 10)
    agent = (
        settings.SERVICE_NAME if process_name is None else f"{settings.SERVICE_NAME}/{process_name}"
    )
    return httpx.AsyncClient(
        timeout=request_timeout(settings.LLM_TIMEOUT_SECONDS),
        transport=ShardedTransport(
            shards=-(-concurrency // CONNECTIONS_PER_SHARD),
            max_connections=concurrency * 2,
            max_keepalive_connections=concurrency,
            keepalive_expiry=30.0,
        ),
        headers={"User-Agent": agent},
    )


# The kept-alive connections of one pool. httpcore's pool looks at every connection it holds,
# and asks each idle one whether its socket is readable, each time a request starts or a
# response ends: with a hundred kept alive that is most of a model call's own CPU.
CONNECTIONS_PER_SHARD = 16


class ShardedTransport(httpx.AsyncBaseTransport):
    """`shards` connection pools taking requests in turn, so each holds a few connections.

    Each pool may open up to `max_connections` on its own: a pool never makes a request wait
    while the process is under the limit it was given (the worker's concurrency bounds what
    is open at once). Each keeps alive twice its share of `max_keepalive_connections`: taking
    requests in turn, a pool's share of a burst varies, and one closed for going over its
    share is opened again for the next burst.
    """

    def __init__(
        self,
        *,
        shards: int,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float,
    ) -> None:
        shards = max(shards, 1)
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max(-(-2 * max_keepalive_connections // shards), 1),
            keepalive_expiry=keepalive_expiry,
        )
        self.pools = tuple(httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards))
        self._turns = itertools.cycle(self.pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._turns).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


def served_providers(settings: Settings) -> frozenset[str]:
    """The providers this deployment answers for: the keys `make_llm_clients` will build.

    The API checks submissions against this without making any client, so a conversation
    for an unconfigured provider is refused at once instead of failing in the worker.
    """
    if settings.OPENAI_BASE_URL is None:
        return frozenset({"ollama"})
    return SUPPORTED_PROVIDERS


def make_llm_clients(settings: Settings, http: httpx.AsyncClient) -> dict[str, LLMClient]:
    """Clients by provider name, for each provider's base URL: always `ollama`, `openai` only
    when `OPENAI_BASE_URL` is set."""
    clients: dict[str, LLMClient] = {}
    for provider in sorted(SUPPORTED_PROVIDERS):
        servers = settings.model_servers(provider)
        if servers:
            clients[provider] = make_llm_client(settings, http, provider, servers[0][0])
    return clients


def make_llm_client(
    settings: Settings, http: httpx.AsyncClient, provider: str, base_url: str
) -> LLMClient:
    """A client of `provider` for the server at `base_url`."""
    if provider == "ollama":
        return OllamaClient(http, base_url, timeout_seconds=settings.LLM_TIMEOUT_SECONDS)
    api_key = settings.OPENAI_API_KEY
    return OpenAICompatClient(
        http,
        base_url,
        timeout_seconds=settings.LLM_TIMEOUT_SECONDS,
        api_key=api_key.get_secret_value() if api_key is not None else None,
    )
