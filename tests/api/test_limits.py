"""Limits on what one caller can take: rate, unfinished conversations, queue depth, sizes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from api import limits
from api.limits import SubmissionLimiter
from shared.queue import create_queue_pool
from shared.settings import Settings
from tests.api.conftest import (
    assert_error,
    client_of,
    create_model_version,
    create_user,
    issue_key,
    running_app,
)
from tests.support.auth import ADMIN_KEY


class Accounts:
    """An app with some limits changed, the admin, two users with keys and one model."""

    def __init__(self, admin: httpx.AsyncClient, ana: httpx.AsyncClient, bob: httpx.AsyncClient):
        self.admin, self.ana, self.bob = admin, ana, bob
        self.model = ""
        self.ana_id = ""

    async def submit(self, client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
        return await client.post(
            "/conversations", json={"model_version_id": self.model, "prompt": "hi", **fields}
        )


@pytest.fixture
async def fresh_redis_keys(settings: Settings) -> None:
    """Rate windows and jobs outlive a test in Redis; each test here starts with none."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        async for key in client.scan_iter(match=f"{settings.QUEUE_NAME}*"):
            await client.delete(key)
    finally:
        await client.aclose()


@asynccontextmanager
async def accounts(settings: Settings, **limits: Any) -> AsyncIterator[Accounts]:
    async with running_app(settings, **limits) as app, client_of(app, ADMIN_KEY) as admin:
        model = (await create_model_version(admin))["id"]
        ana = await create_user(admin, "ana@example.com")
        bob = await create_user(admin, "bob@example.com")
        ana_key = await issue_key(admin, ana["id"])
        bob_key = await issue_key(admin, bob["id"])
        async with client_of(app, ana_key) as ana_client, client_of(app, bob_key) as bob_client:
            found = Accounts(admin, ana_client, bob_client)
            found.model, found.ana_id = model, ana["id"]
            yield found


pytestmark = pytest.mark.usefixtures("clean_db", "fresh_redis_keys")


async def test_the_submit_rate_is_limited_per_user_with_retry_after(settings: Settings) -> None:
    async with accounts(settings, SUBMIT_RATE_LIMIT="3/minute") as a:
        accepted = [await a.submit(a.ana) for _ in range(3)]
        assert [r.status_code for r in accepted] == [202, 202, 202]
        refused = await a.submit(a.ana)
        body = assert_error(refused, 429, "too_many_requests")
        assert body["details"] == {"limit": 3, "window_seconds": 60}
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # Another user's window is its own; the admin acting for ana is not limited.
        assert (await a.submit(a.bob)).status_code == 202
        assert (await a.submit(a.admin, user_id=a.ana_id)).status_code == 202
        # A stored answer queues nothing and is not a submission to limit.
        assert (await a.submit(a.ana, response="given")).status_code == 201


async def test_the_rate_limit_holds_under_concurrent_submits(settings: Settings) -> None:
    async with accounts(settings, SUBMIT_RATE_LIMIT="5/minute") as a:
        responses = await asyncio.gather(*(a.submit(a.ana) for _ in range(15)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * 5 + [429] * 10


async def test_unfinished_conversations_per_user_are_capped_exactly_under_a_race(
    settings: Settings,
) -> None:
    async with accounts(settings, MAX_ACTIVE_CONVERSATIONS_PER_USER=3) as a:
        responses = await asyncio.gather(*(a.submit(a.ana) for _ in range(12)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [202] * 3 + [429] * 9
        refused = next(r for r in responses if r.status_code == 429)
        body = assert_error(refused, 429, "too_many_requests")
        assert body["details"] == {"max_active": 3}
        assert int(refused.headers["Retry-After"]) > 0
        # Bob is not held back by ana; ana gets room again when one of hers finishes.
        assert (await a.submit(a.bob)).status_code == 202
        first = next(r for r in responses if r.status_code == 202).json()["id"]
        assert (await a.ana.post(f"/conversations/{first}/cancel")).status_code == 200
        assert (await a.submit(a.ana)).status_code == 202
        assert (await a.submit(a.ana)).status_code == 429


async def test_a_full_queue_answers_service_unavailable_with_retry_after(
    settings: Settings,
) -> None:
    async with accounts(settings, QUEUE_MAX_DEPTH=2) as a:
        assert (await a.submit(a.ana)).status_code == 202
        assert (await a.submit(a.bob)).status_code == 202
        refused = await a.submit(a.admin, user_id=a.ana_id)
        body = assert_error(refused, 503, "service_unavailable")
        assert body["details"] == {"queue_depth": 2, "max_depth": 2}
        assert refused.headers["Retry-After"] == "30"
        # Nothing was stored for the refused submission.
        listed = await a.admin.get("/conversations")
        assert listed.headers["X-Total-Count"] == "2"


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("prompt", "PROMPT_MAX_CHARS"),
        ("system_instruction", "SYSTEM_INSTRUCTION_MAX_CHARS"),
        ("context", "CONTEXT_MAX_CHARS"),
    ],
)
async def test_text_sizes_are_settings_enforced_and_documented(
    settings: Settings, field: str, setting: str
) -> None:
    async with accounts(settings, **{setting: 10}) as a:
        at_edge = await a.submit(a.ana, **{field: "x" * 10})
        past = await a.submit(a.ana, **{field: "x" * 11})
        schema = (await a.ana.get("/openapi.json")).json()
    assert at_edge.status_code == 202, at_edge.text
    body = assert_error(past, 422, "validation_error")
    assert body["details"][0]["loc"] == ["body", field]
    prop = schema["components"]["schemas"]["ConversationCreate"]["properties"][field]
    assert 10 in [p.get("maxLength") for p in prop.get("anyOf", [prop])]


async def test_max_tokens_above_the_global_limit_is_refused_and_documented(
    settings: Settings,
) -> None:
    async with accounts(settings, MAX_TOKENS_LIMIT=256) as a:
        at_edge = await a.submit(a.ana, max_tokens=256)
        past = await a.submit(a.ana, max_tokens=257)
        schema = (await a.ana.get("/openapi.json")).json()
    assert at_edge.status_code == 202, at_edge.text
    body = assert_error(past, 422, "validation_error")
    assert body["details"][0]["loc"] == ["body", "max_tokens"]
    prop = schema["components"]["schemas"]["ConversationCreate"]["properties"]["max_tokens"]
    assert 256 in [p.get("maximum") for p in prop["anyOf"]]


async def test_the_queue_depth_is_sampled_far_from_the_limit_and_read_each_time_near_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far below QUEUE_MAX_DEPTH a submission costs no Redis read of the depth but once a
    second; within DEPTH_EXACT_MARGIN of it, every submission reads it."""
    queue = create_queue_pool(settings)
    clock = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock[0])
    reads = 0
    zcard = queue.zcard

    async def counted(name: str) -> Any:
        nonlocal reads
        reads += 1
        return await zcard(name)

    monkeypatch.setattr(queue, "zcard", counted)
    limit = limits.DEPTH_EXACT_MARGIN + 50
    limiter = SubmissionLimiter(settings.model_copy(update={"QUEUE_MAX_DEPTH": limit}), queue)
    try:
        for _ in range(5):
            await limiter.check_queue_depth()
        assert reads == 1
        clock[0] += limits.DEPTH_SAMPLE_SECONDS
        await limiter.check_queue_depth()
        assert reads == 2
        # 60 queued jobs: within the margin of the limit, so each check reads again.
        await queue.zadd(settings.QUEUE_NAME, {f"job-{n}": n for n in range(60)})
        clock[0] += limits.DEPTH_SAMPLE_SECONDS
        for _ in range(3):
            await limiter.check_queue_depth()
        assert reads == 5
    finally:
        await queue.delete(settings.QUEUE_NAME)
        await queue.aclose()
