"""The queue's tests run twice: on fakeredis (no server needed) and on the run's real Redis,
so whatever fakeredis does differently from Redis (scripts, scores, expiry) cannot hide a bug.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from fakeredis import FakeAsyncRedis
from redis.asyncio import ConnectionPool

from shared.job_contract import deserialize_job, serialize_job


@pytest.fixture(params=["fakeredis", "redis"])
async def pool(request: pytest.FixtureRequest, queue_name: str) -> AsyncIterator[ArqRedis]:
    if request.param == "fakeredis":
        connections = FakeAsyncRedis().connection_pool
    else:
        connections = ConnectionPool.from_url(request.getfixturevalue("redis_url"))
    name = f"{queue_name}:{uuid.uuid4().hex[:8]}"
    arq_pool = ArqRedis(
        connection_pool=connections,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        # A queue of its own per test: the real Redis is shared with the rest of the run.
        default_queue_name=name,
    )
    yield arq_pool
    # The queue's own keys (its set, ranks, tokens, counts) and its jobs' keys.
    keys = [k async for k in arq_pool.scan_iter(match=f"{name}*")]
    for job_id in await arq_pool.zrange(name, 0, -1):
        for prefix in (job_key_prefix, in_progress_key_prefix, retry_key_prefix):
            keys.append(prefix + job_id.decode())
    if keys:
        await arq_pool.delete(*keys)
    await arq_pool.aclose()
