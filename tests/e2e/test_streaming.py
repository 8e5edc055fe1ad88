"""`GET /conversations/{id}/events` through the real API and worker processes.

A client connects before, during and after a generation and always gets the same thing: the
deltas in order from seq 1, none missing or repeated, adding up to the answer, then `done`
with the conversation exactly as `GET /conversations/{id}` returns it, and the stream closes.
`Last-Event-ID` resumes; a worker killed mid-generation shows as `reset`; Redis lost
mid-generation costs deltas, never the answer. The stand-in holds a
stream after a number of pieces until the test releases it, so "during" is a fact, not a
timing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import open_stack, wait_for_calls
from tests.support.sse_client import EventReader, deltas, text_of
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

PROMPT_WORDS = "one two three four five six seven eight"
# Generous timeouts: a held stream must not time out while a test looks at it.
STREAMING_ENV = {
    "OLLAMA_TIMEOUT_SECONDS": "20",
    "WORKER_JOB_TIMEOUT_SECONDS": "25",
    "WORKER_LEASE_SECONDS": "30",
    "EVENTS_KEEPALIVE_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def streaming_stack(
    settings: Settings,
    e2e_database: URL,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("streaming")
    llm = fake_llm_server.url
    with running_stack(
        settings, e2e_database, llm, workdir, OPENAI_BASE_URL=llm, **STREAMING_ENV
    ) as running:
        yield running


@pytest.fixture
def llm(fake_llm: FakeLLMServer) -> Iterator[FakeLLMServer]:
    """The stand-in; whatever a test held is let go when it ends."""
    try:
        yield fake_llm
    finally:
        fake_llm.configure(hold=False)


def _reader(stack: Stack, cid: str, **kwargs: int) -> EventReader:
    reader = EventReader(stack.base_url, cid, ADMIN_HEADERS, **kwargs)
    assert reader.status == 200, reader.error
    assert reader.content_type.startswith("text/event-stream")
    return reader


def _check_complete(stack: Stack, cid: str, events: list, *, first_seq: int = 1) -> dict:
    """Deltas numbered on from `first_seq`, then one `done` equal to GET's body, then closed."""
    assert [e.event for e in events][-1] == "done"
    assert [e.event for e in events].count("done") == 1
    seqs = [e.json()["seq"] for e in deltas(events)]
    assert seqs == list(range(first_seq, first_seq + len(seqs)))
    assert [e.id for e in deltas(events)] == [str(s) for s in seqs]
    done = events[-1].json()
    polled = stack.client.get(f"/conversations/{cid}")
    assert done == polled.json()
    assert events[-1].data == polled.text  # byte for byte the body GET returns
    return dict(done)


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_a_client_connected_during_generation_gets_the_replay_then_the_rest_live(
    streaming_stack: Stack, llm: FakeLLMServer, provider: str
) -> None:
    llm.configure(hold=True, hold_after_pieces=3)
    user, model = streaming_stack.setup_model(provider=provider)
    prompt = f"during {provider} {PROMPT_WORDS}"
    cid = streaming_stack.submit(user, model, prompt)["id"]

    early = _reader(streaming_stack, cid)
    # Three pieces out (in one delta or more), then the model is held.
    first = early.until_text(f"echo: during {provider} ")
    late = _reader(streaming_stack, cid)  # connects mid-generation
    replayed = late.until_text(f"echo: during {provider} ")
    assert replayed == first
    llm.release()

    events = first + early.rest()
    done = _check_complete(streaming_stack, cid, events)
    assert done["status"] == "completed"
    assert text_of(events) == done["response"] == f"echo: {prompt}"
    assert "reset" not in [e.event for e in events]
    assert replayed + late.rest() == events
    assert llm.stats().calls_for(prompt) == 1


def test_a_client_connected_before_any_text_gets_keep_alives_then_everything(
    streaming_stack: Stack, llm: FakeLLMServer
) -> None:
    llm.configure(hold=True)  # held before the first piece
    user, model = streaming_stack.setup_model()
    prompt = f"before {PROMPT_WORDS}"
    cid = streaming_stack.submit(user, model, prompt)["id"]
    wait_for_calls(llm, prompt, 1)

    reader = _reader(streaming_stack, cid)
    # Nothing to send yet, but the connection is kept alive with comments.
    with httpx.stream(
        "GET",
        f"{streaming_stack.base_url}/conversations/{cid}/events",
        headers=ADMIN_HEADERS,
        timeout=30,
    ) as raw:
        assert next(line for line in raw.iter_lines() if line).startswith(":")
    llm.release()

    events = reader.rest()
    done = _check_complete(streaming_stack, cid, events)
    assert text_of(events) == done["response"] == f"echo: {prompt}"
    assert len(deltas(events)) >= 1


def test_a_client_connected_after_the_end_gets_the_replay_and_once_expired_only_done(
    streaming_stack: Stack, llm: FakeLLMServer
) -> None:
    user, model = streaming_stack.setup_model()
    prompt = f"after {PROMPT_WORDS}"
    cid = streaming_stack.submit(user, model, prompt)["id"]
    streaming_stack.wait_all([cid])

    events = _reader(streaming_stack, cid).rest()
    done = _check_complete(streaming_stack, cid, events)
    assert text_of(events) == done["response"] == f"echo: {prompt}"

    key = f"{streaming_stack.env['QUEUE_NAME']}:events:{cid}"
    client = redis.Redis.from_url(streaming_stack.env["REDIS_URL"])
    try:
        # Kept for the retention period after the end, then gone (as if expired now).
        assert 0 < client.ttl(key) <= 300
        client.delete(key)
    finally:
        client.close()
    expired = _reader(streaming_stack, cid).rest()
    assert [e.event for e in expired] == ["done"]
    assert expired[0].json() == done


def test_last_event_id_resumes_after_that_delta_live_and_after_the_end(
    streaming_stack: Stack, llm: FakeLLMServer
) -> None:
    llm.configure(hold=True, hold_after_pieces=2)
    user, model = streaming_stack.setup_model()
    prompt = f"resume {PROMPT_WORDS}"
    cid = streaming_stack.submit(user, model, prompt)["id"]

    first = _reader(streaming_stack, cid)
    seen = first.until_text("echo: resume ")
    first.close()  # the client goes away mid-generation
    last_seen = int(deltas(seen)[-1].id)
    resumed = _reader(streaming_stack, cid, last_event_id=last_seen)
    llm.release()
    rest = resumed.rest()
    _check_complete(streaming_stack, cid, rest, first_seq=last_seen + 1)
    assert text_of(seen + rest) == f"echo: {prompt}"

    # After the end, from the first delta on: the deltas after it, then done.
    everything = _reader(streaming_stack, cid).rest()
    later = _reader(streaming_stack, cid, last_event_id=1).rest()
    _check_complete(streaming_stack, cid, later, first_seq=2)
    assert later == everything[1:]


def test_a_conversation_cancelled_while_followed_ends_with_done_cancelled(
    streaming_stack: Stack, llm: FakeLLMServer
) -> None:
    llm.configure(hold=True, hold_after_pieces=1)
    user, model = streaming_stack.setup_model()
    prompt = f"cancelled {PROMPT_WORDS}"
    cid = streaming_stack.submit(user, model, prompt)["id"]
    reader = _reader(streaming_stack, cid)
    reader.until(lambda event: event.event == "delta")

    assert streaming_stack.client.post(f"/conversations/{cid}/cancel").status_code == 200

    events = reader.rest()  # no word from the worker: the row check notices
    assert events[-1].event == "done"
    assert events[-1].json()["status"] == "cancelled"


def test_a_users_key_follows_its_own_conversation_and_another_users_is_not_found(
    streaming_stack: Stack, llm: FakeLLMServer
) -> None:
    owner, model = streaming_stack.setup_model()
    other, _ = streaming_stack.setup_model()
    keys = {}
    for user in (owner, other):
        created = streaming_stack.client.post(f"/users/{user}/api-keys", json={"name": "sse"})
        assert created.status_code == 201, created.text
        keys[user] = {"Authorization": f"Bearer {created.json()['key']}"}
    cid = streaming_stack.submit(owner, model, f"owned {PROMPT_WORDS}")["id"]
    streaming_stack.wait_all([cid])

    mine = EventReader(streaming_stack.base_url, cid, keys[owner])
    assert mine.status == 200
    assert mine.rest()[-1].event == "done"
    url = f"{streaming_stack.base_url}/conversations/{cid}/events"
    theirs = httpx.get(url, headers=keys[other], timeout=10)
    assert theirs.status_code == 404
    assert theirs.json()["code"] == "not_found"
    assert httpx.get(url, timeout=10).status_code == 401
    missing = httpx.get(
        f"{streaming_stack.base_url}/conversations/{owner}/events", headers=ADMIN_HEADERS
    )
    assert missing.status_code == 404


def test_a_worker_killed_mid_generation_shows_as_reset_and_the_next_attempt_streams_anew(
    settings: Settings, own_database: URL, fake_llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    fake_llm_server.reset()
    quick_lease = {
        "OLLAMA_TIMEOUT_SECONDS": "3",
        "WORKER_JOB_TIMEOUT_SECONDS": "4",
        "WORKER_LEASE_SECONDS": "5",
        "EVENTS_KEEPALIVE_SECONDS": "0.5",
    }
    fake_llm_server.configure(hold=True, hold_after_pieces=2)
    try:
        with open_stack(
            settings, own_database, fake_llm_server.url, tmp_path, workers=1, **quick_lease
        ) as stack:
            prompt = f"killed {PROMPT_WORDS}"
            cid = stack.submit(prompt)
            reader = EventReader(stack.base_url, cid, ADMIN_HEADERS)
            assert reader.status == 200
            before = reader.until_text("echo: killed ")
            stack.workers[0].kill()
            fake_llm_server.configure(hold=False)
            stack.add_worker()

            events = before + reader.rest()
            row = stack.settle([cid], timeout=30)[cid]
    finally:
        fake_llm_server.configure(hold=False)

    kinds = [e.event for e in events]
    assert "reset" in kinds
    reset = events[kinds.index("reset")]
    assert reset.json()["attempt"] >= 2
    # Numbering goes on across the reset: a client resuming never confuses the two runs.
    seqs = [e.json()["seq"] for e in deltas(events)]
    assert seqs == list(range(1, len(seqs) + 1))
    done = events[-1].json()
    assert (done["status"], row.status) == ("completed", "completed")
    assert text_of(events) == done["response"] == f"echo: {prompt}"
    assert done["attempts"] == row.attempts >= 2
    assert json.loads(events[-1].data) == done


def test_redis_lost_mid_generation_costs_the_client_nothing_but_deltas(
    settings: Settings, own_database: URL, fake_llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    """The worker's publishing stops, its write-back does not; the API cannot read the
    stream any more and finds the end in PostgreSQL: `done` with the whole answer."""
    fake_llm_server.reset()
    fake_llm_server.configure(hold=True, hold_after_pieces=2)
    try:
        with open_stack(
            settings, own_database, fake_llm_server.url, tmp_path, workers=1, **STREAMING_ENV
        ) as stack:
            prompt = f"redis lost {PROMPT_WORDS}"
            cid = stack.submit(prompt)
            reader = EventReader(stack.base_url, cid, ADMIN_HEADERS)
            assert reader.status == 200
            before = reader.until_text("echo: redis ")
            stack.redis.kill()
            fake_llm_server.configure(hold=False)

            events = before + reader.rest()
            row = stack.settle([cid], timeout=30)[cid]
            stack.redis.start()  # so that the stack stops as usual
    finally:
        fake_llm_server.configure(hold=False)

    assert row.status == "completed"
    assert row.attempts == 1
    assert fake_llm_server.stats().calls_for(prompt) == 1  # not failed, not generated again
    done = events[-1]
    assert done.event == "done"
    assert done.json()["status"] == "completed"
    assert done.json()["response"] == f"echo: {prompt}"
    # What was published before Redis went is a true start of the answer.
    assert done.json()["response"].startswith(text_of(events))
