"""Queue contract on fakeredis: JSON payloads, one job per conversation, no pickle."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from fakeredis import FakeAsyncRedis

from shared.jobs import (
    GENERATE_CONVERSATION,
    deserialize_job,
    generation_job_id,
    serialize_job,
)
from shared.queue import enqueue_generation

QUEUE = "test:queue"


@pytest.fixture
async def pool() -> AsyncIterator[ArqRedis]:
    fake = FakeAsyncRedis()
    arq_pool = ArqRedis(
        connection_pool=fake.connection_pool,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=QUEUE,
    )
    yield arq_pool
    await arq_pool.aclose()


async def test_a_conversation_is_enqueued_once(pool: ArqRedis) -> None:
    conversation_id = uuid.uuid4()
    assert await enqueue_generation(pool, conversation_id, trace_context={"traceparent": "00-x"})
    assert not await enqueue_generation(pool, conversation_id)
    assert await pool.zcard(QUEUE) == 1


async def test_the_payload_is_plain_json_with_only_ids(pool: ArqRedis) -> None:
    conversation_id = uuid.uuid4()
    await enqueue_generation(pool, conversation_id, trace_context={"traceparent": "tp"})
    raw = await pool.get(f"arq:job:{generation_job_id(conversation_id)}")
    payload = json.loads(raw)
    assert payload["f"] == GENERATE_CONVERSATION
    assert payload["a"] == [str(conversation_id), {"traceparent": "tp"}]
    assert payload["k"] == {}


async def test_different_conversations_get_different_jobs(pool: ArqRedis) -> None:
    for _ in range(3):
        assert await enqueue_generation(pool, uuid.uuid4())
    assert await pool.zcard(QUEUE) == 3


async def test_deferred_enqueue_is_scheduled_in_the_future(pool: ArqRedis) -> None:
    conversation_id = uuid.uuid4()
    await enqueue_generation(pool, conversation_id, defer_seconds=30)
    ((_, score),) = await pool.zrange(QUEUE, 0, -1, withscores=True)
    now_ms = (await pool.time())[0] * 1000
    assert score > now_ms + 20_000


def test_deserializer_refuses_what_is_not_a_json_object() -> None:
    with pytest.raises(UnicodeDecodeError):
        deserialize_job(b"\x80\x04\x95pickle")
    with pytest.raises(json.JSONDecodeError):
        deserialize_job(b"not json")
    with pytest.raises(TypeError):
        deserialize_job(b"[1, 2]")
