"""Queue contract: JSON payloads, one job per conversation, no pickle.

Every test runs twice: on fakeredis (no server needed) and on the real Redis of the run, so
whatever fakeredis does differently from Redis (scripts, scores, expiry) cannot hide a bug.
"""

from __future__ import annotations

import json
import uuid

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix

from shared.job_contract import (
    GENERATE_CONVERSATION,
    deserialize_job,
    generation_job_id,
)
from shared.queue import enqueue_generation, release_job


async def test_a_conversation_is_enqueued_once(pool: ArqRedis) -> None:
    conversation_id = uuid.uuid4()
    assert await enqueue_generation(pool, conversation_id, trace_context={"traceparent": "00-x"})
    assert not await enqueue_generation(pool, conversation_id)
    assert await pool.zcard(pool.default_queue_name) == 1


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
    assert await pool.zcard(pool.default_queue_name) == 3


async def test_deferred_enqueue_is_scheduled_in_the_future(pool: ArqRedis) -> None:
    conversation_id = uuid.uuid4()
    await enqueue_generation(pool, conversation_id, defer_seconds=30)
    ((_, score),) = await pool.zrange(pool.default_queue_name, 0, -1, withscores=True)
    now_ms = (await pool.time())[0] * 1000
    assert score > now_ms + 20_000


def test_deserializer_refuses_what_is_not_a_json_object() -> None:
    with pytest.raises(UnicodeDecodeError):
        deserialize_job(b"\x80\x04\x95pickle")
    with pytest.raises(json.JSONDecodeError):
        deserialize_job(b"not json")
    with pytest.raises(TypeError):
        deserialize_job(b"[1, 2]")


async def test_release_job_lets_a_dead_workers_job_run_again(pool: ArqRedis) -> None:
    """A SIGKILLed worker leaves its job marked in progress; releasing it removes that mark
    and nothing else: the job, its place in the queue and other jobs' marks stay."""
    dead, other = uuid.uuid4(), uuid.uuid4()
    for conversation_id in (dead, other):
        assert await enqueue_generation(pool, conversation_id)
        await pool.set(in_progress_key_prefix + generation_job_id(conversation_id), b"1")
    await release_job(pool, dead)
    assert not await pool.exists(in_progress_key_prefix + generation_job_id(dead))
    assert await pool.exists(in_progress_key_prefix + generation_job_id(other))
    assert await pool.exists(job_key_prefix + generation_job_id(dead))
    assert await pool.zscore(pool.default_queue_name, generation_job_id(dead)) is not None
    # Releasing a job nobody holds is harmless.
    await release_job(pool, dead)
    await pool.delete(in_progress_key_prefix + generation_job_id(other))
