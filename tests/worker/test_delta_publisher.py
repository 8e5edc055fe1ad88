"""The event stream's contract on a real Redis, and the worker's publisher writing to it.

The append script numbers deltas, announces a new run with `reset`, refuses an older attempt
and anything after `end`; the publisher batches pieces, never fails or holds up the
generation when Redis is gone, and a whole attempt leaves the answer in the stream.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from arq import Retry
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from redis.asyncio import Redis

from shared.db import SessionFactory
from shared.settings import Settings
from shared.stream_events import (
    REFUSED,
    UNFINISHED_TTL_SECONDS,
    EntryKind,
    EventStreamWriter,
    StreamEntry,
    after_seq,
    events_key,
)
from tests.factories import load, make_conversation
from tests.support.fake_llm import FakeLLMServer
from worker.context import WorkerResources
from worker.delta_publisher import FINAL_WRITE_SECONDS, DeltaPublisher
from worker.generation import JobResult, run_generation

RETENTION = 120


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def writer(redis: Redis, queue_name: str) -> EventStreamWriter:
    return EventStreamWriter(
        redis, queue_name=queue_name, max_len=1000, retention_seconds=RETENTION
    )


@pytest.fixture
def closed_redis_url() -> str:
    """A Redis URL nothing listens on: the port was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def _entries(
    redis: Redis, queue_name: str, cid: uuid.UUID, after: int = 0
) -> list[StreamEntry]:
    raw = await redis.xrange(events_key(queue_name, cid), min=f"({after_seq(after)}", max="+")
    return [StreamEntry.parse(entry_id, fields) for entry_id, fields in raw]


def _shape(entries: list[StreamEntry]) -> list[tuple[str, int, int, str]]:
    return [(e.kind.value, e.seq, e.attempt, e.text) for e in entries]


async def test_deltas_are_numbered_and_a_new_run_resets_then_goes_on_counting(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    assert await writer.append_delta(cid, attempt=1, run="a", text="Hel") == 1
    assert await writer.append_delta(cid, attempt=1, run="a", text="lo") == 2
    # The worker died; the next attempt's first piece voids what came before.
    assert await writer.append_delta(cid, attempt=2, run="b", text="Hello") == 3
    assert await writer.append_delta(cid, attempt=2, run="b", text=" world") == 4

    assert _shape(await _entries(redis, queue_name, cid)) == [
        ("delta", 1, 1, "Hel"),
        ("delta", 2, 1, "lo"),
        ("reset", 2, 2, ""),
        ("delta", 3, 2, "Hello"),
        ("delta", 4, 2, " world"),
    ]
    # Resuming after delta 2 starts with the reset: a client never mixes two runs.
    assert [e.kind for e in await _entries(redis, queue_name, cid, after=2)][:1] == [
        EntryKind.RESET
    ]


async def test_a_handed_back_attempt_keeps_its_number_but_its_next_run_resets(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    await writer.append_delta(cid, attempt=1, run="before-shutdown", text="a")
    await writer.append_delta(cid, attempt=1, run="after-hand-back", text="b")

    kinds = [e.kind for e in await _entries(redis, queue_name, cid)]
    assert kinds == [EntryKind.DELTA, EntryKind.RESET, EntryKind.DELTA]


async def test_an_older_attempt_and_anything_after_the_end_are_refused(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    await writer.append_delta(cid, attempt=2, run="new", text="fresh")
    # A worker that lost its lease, still talking to the model.
    assert await writer.append_delta(cid, attempt=1, run="old", text="stale") == REFUSED
    assert await writer.append_end(cid, attempt=2, run="new") == 1
    assert await writer.append_delta(cid, attempt=2, run="new", text="late") == REFUSED
    assert await writer.append_end(cid, attempt=2, run="new") == REFUSED

    assert _shape(await _entries(redis, queue_name, cid)) == [
        ("delta", 1, 2, "fresh"),
        ("end", 1, 2, ""),
    ]


async def test_an_unfinished_stream_lives_long_and_an_ended_one_for_the_retention(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    key = events_key(queue_name, cid)
    await writer.append_delta(cid, attempt=1, run="a", text="x")
    assert RETENTION < await redis.ttl(key) <= UNFINISHED_TTL_SECONDS
    await writer.append_end(cid, attempt=1, run="a")
    assert 0 < await redis.ttl(key) <= RETENTION


async def test_an_end_without_any_text_is_the_streams_only_entry(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    await writer.append_end(cid, attempt=1, run="a")

    assert _shape(await _entries(redis, queue_name, cid)) == [("end", 0, 1, "")]


async def test_pieces_gathered_in_one_interval_become_one_delta(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    publisher = DeltaPublisher(writer, cid, attempt=1, flush_interval=60)
    for piece in ["The ", "sky ", "is ", "blue"]:
        publisher.add(piece)
    # The interval is a minute: only `finish` sends them, and at once.
    await asyncio.wait_for(publisher.finish(), FINAL_WRITE_SECONDS * 2)
    publisher.close()

    assert _shape(await _entries(redis, queue_name, cid)) == [("delta", 1, 1, "The sky is blue")]


async def test_pieces_are_sent_as_they_come_without_waiting_for_the_end(
    writer: EventStreamWriter, redis: Redis, queue_name: str
) -> None:
    cid = uuid.uuid4()
    publisher = DeltaPublisher(writer, cid, attempt=1, flush_interval=0.001)
    try:
        publisher.add("first")
        async with asyncio.timeout(10):
            while not await _entries(redis, queue_name, cid):
                await asyncio.sleep(0.005)
        publisher.add(" second")
        await publisher.finish()
    finally:
        publisher.close()

    entries = await _entries(redis, queue_name, cid)
    assert "".join(e.text for e in entries) == "first second"
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))


async def test_a_redis_that_is_gone_costs_the_generation_nothing(closed_redis_url: str) -> None:
    dead = Redis.from_url(closed_redis_url, socket_connect_timeout=1, socket_timeout=1)
    writer = EventStreamWriter(dead, queue_name="q", max_len=100, retention_seconds=10)
    publisher = DeltaPublisher(writer, uuid.uuid4(), attempt=1, flush_interval=0)
    try:
        started = time.perf_counter()
        for _ in range(1000):
            publisher.add("piece ")  # never raises, never waits
        adding = time.perf_counter() - started
        await publisher.finish()
        await publisher.end()
    finally:
        publisher.close()
        await dead.aclose()

    assert adding < 0.5


async def test_an_attempt_leaves_its_answer_in_the_stream_then_the_end(
    res: WorkerResources,
    session_factory: SessionFactory,
    redis: Redis,
    settings: Settings,
) -> None:
    cid = await make_conversation(session_factory, prompt="one two three four five")

    assert await run_generation(res, cid) is JobResult.COMPLETED

    entries = await _entries(redis, settings.QUEUE_NAME, cid)
    row = await load(session_factory, cid)
    assert entries[-1].kind is EntryKind.END
    deltas = [e for e in entries if e.kind is EntryKind.DELTA]
    assert "".join(e.text for e in deltas) == row.response == "echo: one two three four five"
    ttl = await redis.ttl(events_key(settings.QUEUE_NAME, cid))
    assert 0 < ttl <= settings.EVENTS_RETENTION_SECONDS


async def test_a_retried_attempt_resets_the_text_of_the_one_cut_short(
    res: WorkerResources,
    session_factory: SessionFactory,
    fake_llm: FakeLLMServer,
    redis: Redis,
    settings: Settings,
) -> None:
    cid = await make_conversation(session_factory, prompt="a b c d e f g h")
    fake_llm.configure(mode="close_mid_stream")
    with pytest.raises(Retry):
        await run_generation(res, cid)
    cut = await _entries(redis, settings.QUEUE_NAME, cid)
    assert cut
    assert all(e.kind is EntryKind.DELTA for e in cut)  # a retry is not the end

    fake_llm.configure(mode="ok")
    assert await run_generation(res, cid) is JobResult.COMPLETED

    entries = await _entries(redis, settings.QUEUE_NAME, cid)
    kinds = [e.kind for e in entries]
    assert kinds.count(EntryKind.RESET) == 1
    after_reset = entries[kinds.index(EntryKind.RESET) + 1 :]
    text = "".join(e.text for e in after_reset if e.kind is EntryKind.DELTA)
    assert text == (await load(session_factory, cid)).response
    assert [e.seq for e in entries if e.kind is EntryKind.DELTA] == list(
        range(1, len([k for k in kinds if k is EntryKind.DELTA]) + 1)
    )


async def test_without_publishing_the_attempt_still_completes_and_writes_nothing(
    res: WorkerResources, session_factory: SessionFactory, redis: Redis, settings: Settings
) -> None:
    res.events = None
    cid = await make_conversation(session_factory)

    assert await run_generation(res, cid) is JobResult.COMPLETED
    assert not await redis.exists(events_key(settings.QUEUE_NAME, cid))


async def test_with_publishing_off_the_stream_gets_only_its_end(
    res: WorkerResources, session_factory: SessionFactory, redis: Redis, settings: Settings
) -> None:
    res.settings = res.settings.model_copy(update={"EVENTS_PUBLISH_ENABLED": False})
    cid = await make_conversation(session_factory)

    assert await run_generation(res, cid) is JobResult.COMPLETED
    assert [e.kind for e in await _entries(redis, settings.QUEUE_NAME, cid)] == [EntryKind.END]


async def test_the_batched_appends_are_not_traced_and_the_end_is(
    writer: EventStreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span per flush would be most of a job's spans: the pump runs with instrumentation
    suppressed; the single `end` append keeps its span."""
    traced: dict[str, list[bool]] = {"delta": [], "end": []}
    append_delta, append_end = writer.append_delta, writer.append_end

    async def delta(*args: object, **kwargs: object) -> int:
        traced["delta"].append(is_instrumentation_enabled())
        return await append_delta(*args, **kwargs)  # type: ignore[arg-type]

    async def end(*args: object, **kwargs: object) -> None:
        traced["end"].append(is_instrumentation_enabled())
        await append_end(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "append_delta", delta)
    monkeypatch.setattr(writer, "append_end", end)
    publisher = DeltaPublisher(writer, uuid.uuid4(), attempt=1, flush_interval=0.01)
    publisher.add("one ")
    publisher.add("two")
    await publisher.finish()
    await publisher.end()
    assert traced == {"delta": [False], "end": [True]}
