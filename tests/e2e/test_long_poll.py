"""`GET /conversations/{id}?wait=N` through the real API and worker processes.

The answer comes as soon as the worker has written the outcome (its announcement wakes the
waiting request), or after N seconds with the state then; an ended conversation is answered
at once. The stand-in holds the model until the test lets it go, so "still running" is a fact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import wait_for_calls
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

# Far above anything the tests wait for: an answer this late means nobody woke the request.
LONG_WAIT = 60
GENEROUS_ENV = {
    "OLLAMA_TIMEOUT_SECONDS": "20",
    "WORKER_JOB_TIMEOUT_SECONDS": "25",
    "WORKER_LEASE_SECONDS": "30",
}


@pytest.fixture(scope="module")
def poll_stack(
    settings: Settings,
    e2e_database: URL,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("long-poll")
    with running_stack(
        settings, e2e_database, fake_llm_server.url, workdir, **GENEROUS_ENV
    ) as running:
        yield running


@pytest.fixture
def llm(fake_llm: FakeLLMServer) -> Iterator[FakeLLMServer]:
    try:
        yield fake_llm
    finally:
        fake_llm.configure(hold=False)


class _Poll:
    """One long-poll in a thread of its own: its answer and how long it took."""

    def __init__(self, stack: Stack, cid: str, wait: int) -> None:
        self.response: httpx.Response | None = None
        self.seconds = 0.0
        self._url = f"{stack.base_url}/conversations/{cid}?wait={wait}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        self.response = httpx.get(self._url, headers=ADMIN_HEADERS, timeout=LONG_WAIT + 30)
        self.seconds = time.monotonic() - started

    def result(self) -> dict[str, Any]:
        self._thread.join(LONG_WAIT + 30)
        assert self.response is not None
        assert self.response.status_code == 200, self.response.text
        body: dict[str, Any] = self.response.json()
        return body


def test_a_waiting_poll_is_answered_when_the_worker_finishes(
    poll_stack: Stack, llm: FakeLLMServer
) -> None:
    llm.configure(hold=True)
    user, model = poll_stack.setup_model()
    prompt = "long-poll finishes"
    cid = poll_stack.submit(user, model, prompt)["id"]
    wait_for_calls(llm, prompt, 1)

    waiting = _Poll(poll_stack, cid, LONG_WAIT)
    # A short wait on the same conversation: it ends with the state it has then.
    still = poll_stack.client.get(f"/conversations/{cid}", params={"wait": 1})
    assert still.status_code == 200
    assert still.json()["status"] == "running"
    llm.release()

    body = waiting.result()
    assert body["status"] == "completed"
    assert body["response"] == f"echo: {prompt}"
    assert body == poll_stack.client.get(f"/conversations/{cid}").json()
    assert waiting.seconds < LONG_WAIT / 2  # woken, not timed out


def test_an_ended_conversation_is_answered_at_once(poll_stack: Stack, llm: FakeLLMServer) -> None:
    user, model = poll_stack.setup_model()
    cid = poll_stack.submit(user, model, "long-poll ended")["id"]
    done = poll_stack.wait_all([cid])[cid]

    poll = _Poll(poll_stack, cid, LONG_WAIT)

    assert poll.result() == done
    assert poll.seconds < LONG_WAIT / 2


def test_wait_is_bounded_and_another_users_conversation_is_not_found(
    poll_stack: Stack, llm: FakeLLMServer
) -> None:
    owner, model = poll_stack.setup_model()
    other, _ = poll_stack.setup_model()
    created = poll_stack.client.post(f"/users/{other}/api-keys", json={"name": "poll"})
    assert created.status_code == 201, created.text
    other_key = {"Authorization": f"Bearer {created.json()['key']}"}
    cid = poll_stack.submit(owner, model, "long-poll bounds")["id"]
    url = f"{poll_stack.base_url}/conversations/{cid}"

    for bad in ("61", "-1", "soon"):
        response = httpx.get(url, params={"wait": bad}, headers=ADMIN_HEADERS, timeout=10)
        assert response.status_code == 422, bad
    theirs = httpx.get(url, params={"wait": LONG_WAIT}, headers=other_key, timeout=10)
    assert theirs.status_code == 404
    poll_stack.wait_all([cid])


def _submit_preferring(stack: Stack, user: str, model: str, prompt: str, prefer: str) -> Any:
    return httpx.post(
        f"{stack.base_url}/conversations",
        json={"user_id": user, "model_version_id": model, "prompt": prompt},
        headers={**ADMIN_HEADERS, "Prefer": prefer},
        timeout=LONG_WAIT + 30,
    )


def test_prefer_wait_answers_the_finished_conversation_when_it_ends_in_time(
    poll_stack: Stack, llm: FakeLLMServer
) -> None:
    user, model = poll_stack.setup_model()
    prompt = "prefer wait finishes"
    response = _submit_preferring(poll_stack, user, model, prompt, f"wait={LONG_WAIT}")
    assert response.status_code == 201, response.text
    assert response.headers["Preference-Applied"] == f"wait={LONG_WAIT}"
    body = response.json()
    assert (body["status"], body["response"]) == ("completed", f"echo: {prompt}")
    assert body == poll_stack.client.get(response.headers["Location"]).json()


def test_prefer_wait_answers_202_with_the_state_then_when_it_does_not_end_in_time(
    poll_stack: Stack, llm: FakeLLMServer
) -> None:
    llm.configure(hold=True)
    user, model = poll_stack.setup_model()
    prompt = "prefer wait times out"
    response = _submit_preferring(poll_stack, user, model, prompt, "wait=1")
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.json()["status"] in ("pending", "running")
    # Asked to answer asynchronously: no wait, whatever else the header says.
    at_once = _submit_preferring(poll_stack, user, model, f"{prompt} 2", "respond-async, wait=60")
    assert at_once.status_code == 202
    assert "Preference-Applied" not in at_once.headers
    llm.configure(hold=False)
    poll_stack.wait_all([response.json()["id"], at_once.json()["id"]])
