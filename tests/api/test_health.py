from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from api.main import create_app
from shared.db import SessionFactory, unit_of_work
from shared.queue import waiting_counts
from shared.repositories.conversations import ConversationRepository
from shared.settings import Settings
from tests.api.conftest import assert_error, client_of
from tests.factories import make_conversation, set_columns
from tests.support.auth import ADMIN_HEADERS


async def test_live_db_and_ready(app: FastAPI, client: httpx.AsyncClient) -> None:
    await app.state.queue.delete(app.state.settings.QUEUE_NAME)
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    assert (await client.get("/health/db")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    queue = ready.json()["queue"]
    assert set(queue) == {"depth", "workers_alive", "oldest_pending_age_seconds", "by_priority"}
    assert queue["depth"] == 0
    assert queue["oldest_pending_age_seconds"] is None


async def test_ready_and_metrics_report_the_pending_work(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await app.state.queue.delete(app.state.settings.QUEUE_NAME)
    user = (await client.post("/users", json={"email": "q@example.com"})).json()
    model = (
        await client.post(
            "/model-versions", json={"provider": "ollama", "model_name": "m", "version_tag": "v"}
        )
    ).json()
    for _ in range(2):
        payload = {"user_id": user["id"], "model_version_id": model["id"], "prompt": "p"}
        assert (await client.post("/conversations", json=payload)).status_code == 202
    # The oldest was submitted an hour ago, as far as the row says.
    async with unit_of_work(app.state.session_factory) as session:
        await session.execute(
            text("UPDATE conversation SET created_at = now() - interval '1 hour'")
        )
    queue = (await client.get("/health/ready")).json()["queue"]
    async with app.state.session_factory() as session:
        age_now = await session.scalar(
            text("SELECT extract(epoch FROM now() - min(created_at)) FROM conversation")
        )
    assert 3600 <= queue["oldest_pending_age_seconds"] <= float(age_now)
    assert queue["depth"] == 2
    metrics = (await client.get("/metrics")).text
    assert "oldest_pending_age_seconds " in metrics
    assert 'conversations_submitted_total{mode="queued"} 2.0' in metrics
    assert 'http_requests_total{method="POST",route="/conversations",status="202"} 2.0' in metrics


async def test_ready_documents_its_key_as_optional(app: FastAPI) -> None:
    # Probes call it without a key; the document must not say one is required.
    operation = app.openapi()["paths"]["/health/ready"]["get"]
    assert {} in operation["security"]
    assert {"HTTPBearer": []} in operation["security"]
    async with client_of(app, None) as anonymous:
        assert (await anonymous.get("/health/ready")).json() == {"status": "ok"}


@pytest.mark.usefixtures("clean_db")
async def test_ready_reports_redis_down(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=ADMIN_HEADERS
        ) as client:
            body = assert_error(await client.get("/health/ready"), 503, "service_unavailable")
            assert body["details"]["redis"] == "unreachable"
            assert body["details"]["database"] == "ok"
            assert (await client.get("/health/live")).status_code == 200


async def test_the_oldest_pending_age_is_one_index_lookup_whatever_the_backlog(
    session_factory: SessionFactory,
) -> None:
    """A probe's cost must not grow with the backlog: no count, and the oldest age is read
    from the (status, created_at) index, stopping at its first entry."""
    ids = [await make_conversation(session_factory) for _ in range(3)]
    await set_columns(session_factory, ids[0], created_at=datetime.now(UTC) - timedelta(hours=1))
    async with session_factory() as session:
        age = await ConversationRepository(session).oldest_pending_age()
        # With three rows a sequential scan is cheaper; what matters is that an index serves
        # the filter and the order (no sort), as it must for a big backlog.
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = await session.scalar(
            text(
                "EXPLAIN (FORMAT JSON) SELECT created_at FROM conversation"
                " WHERE status = 'pending' AND is_active ORDER BY created_at LIMIT 1"
            )
        )
    assert age is not None
    assert 3600 <= age < 3600 + 600
    limit = plan[0]["Plan"]
    assert limit["Node Type"] == "Limit"
    scan = limit["Plans"][0]
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan")
    assert scan["Index Name"] == "ix_conversation_status_created_at"


async def test_ready_and_metrics_report_waiting_work_and_its_age_per_priority(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    name = app.state.settings.QUEUE_NAME
    await app.state.queue.delete(name, waiting_counts(name))
    user = (await client.post("/users", json={"email": "prio@example.com"})).json()
    model = (
        await client.post(
            "/model-versions", json={"provider": "ollama", "model_name": "m", "version_tag": "p"}
        )
    ).json()
    payload = {"user_id": user["id"], "model_version_id": model["id"], "prompt": "p"}
    for priority in ("batch", "batch", "interactive"):
        body = {**payload, "priority": priority}
        assert (await client.post("/conversations", json=body)).status_code == 202
    async with unit_of_work(app.state.session_factory) as session:
        await session.execute(
            text(
                "UPDATE conversation SET created_at = now() - interval '1 hour' "
                "WHERE priority = 'batch'"
            )
        )
    by_priority = (await client.get("/health/ready")).json()["queue"]["by_priority"]
    assert by_priority["batch"]["waiting"] == 2
    assert by_priority["interactive"]["waiting"] == 1
    assert by_priority["batch"]["oldest_pending_age_seconds"] >= 3600
    assert 0 <= by_priority["interactive"]["oldest_pending_age_seconds"] < 3600
    metrics = (await client.get("/metrics")).text
    assert 'queue_waiting_by_priority{priority="batch"} 2.0' in metrics
    assert 'queue_waiting_by_priority{priority="interactive"} 1.0' in metrics
    assert 'oldest_pending_age_by_priority_seconds{priority="batch"}' in metrics
