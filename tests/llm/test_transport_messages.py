"""What a failed call says: the provider, the URL and the kind of failure, in those words."""

from __future__ import annotations

import httpx
import pytest

from shared.llm.base import LLMUnavailableError
from shared.llm.transport import cut_short, send
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import free_port


async def test_an_unreachable_server_is_named_with_its_url(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/chat"
    with pytest.raises(LLMUnavailableError) as info:
        await send(http, "POST", url, provider="ollama", http_timeout=httpx.Timeout(2.0))
    assert info.value.message == (
        f"ollama unreachable at {url} (ConnectError): is Ollama running? `make llm_up` starts "
        "one, or fix OLLAMA_BASE_URL"
    )
    assert info.value.retriable is True


async def test_a_server_too_slow_for_the_read_timeout_is_named_with_its_url(
    http: httpx.AsyncClient, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(hold=True)
    url = f"{fake_llm.url}/api/chat"
    try:
        with pytest.raises(LLMUnavailableError) as info:
            await send(
                http,
                "POST",
                url,
                provider="ollama",
                http_timeout=httpx.Timeout(5.0, read=0.2),
                json_body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
    finally:
        fake_llm.configure(hold=False)
    assert info.value.message == f"ollama did not answer in time at {url} (ReadTimeout)"


def test_a_stream_cut_short_says_what_it_lacked() -> None:
    error = cut_short("openai", "http://llm.test/v1/chat/completions", "its last chunk")
    assert error.message == (
        "openai ended the stream from http://llm.test/v1/chat/completions before its last chunk"
    )
    assert error.retriable is True
