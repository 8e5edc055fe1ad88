"""The stand-in itself: the streaming shapes and the separate-process control API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fake_llm_process import FakeLLMProcess


def _lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line]


@pytest.mark.parametrize(
    ("path", "field"), [("/api/chat", "message"), ("/api/generate", "response")]
)
def test_streams_ndjson_ending_with_a_done_chunk(llm: FakeLLMServer, path: str, field: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a b"}], "prompt": "a b"}
    with (
        httpx.Client(trust_env=False) as client,
        client.stream("POST", llm.url + path, json=body) as r,
    ):
        assert r.headers["content-type"] == "application/x-ndjson"
        chunks = _lines(r)

    assert [c["done"] for c in chunks] == [False, False, False, True]
    text = "".join(c[field]["content"] if field == "message" else c[field] for c in chunks)
    assert text == "echo: a b"
    final = chunks[-1]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == ("stop", 2, 3)
    assert isinstance(final["total_duration"], int)


def test_stream_closed_mid_way_is_truncated(llm: FakeLLMServer) -> None:
    llm.configure(mode="close_mid_stream")
    body = {"model": "m", "messages": [{"role": "user", "content": "a b c d"}]}

    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", llm.url + "/api/chat", json=body) as r,
    ):
        _lines(r)


def test_control_rejects_unknown_fields(llm: FakeLLMServer) -> None:
    response = httpx.post(llm.url + "/_control", json={"mood": "grumpy"}, trust_env=False)

    assert response.status_code == 400
    assert llm.state.behaviour.mode == "ok"


def test_separate_process_is_controlled_over_http() -> None:
    with FakeLLMProcess(config={"models": ["llama3.2:3b"]}) as llm:
        assert llm.configure(mode="fail_n_then_ok", fail_n=1, status=503)["fail_n"] == 1
        body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        with httpx.Client(trust_env=False, base_url=llm.url) as client:
            assert client.post("/api/chat", json=body).status_code == 503
            assert client.post("/api/chat", json=body).json()["message"]["content"] == "echo: hi"
            assert client.get("/api/tags").json()["models"][0]["name"] == "llama3.2:3b"
        stats = llm.stats()
        assert (stats.generation_calls, stats.calls_for("hi")) == (2, 2)
        llm.reset()
        assert llm.stats().generation_calls == 0
        pid = llm.pid
    assert pid is not None
    assert llm.pid is None
