"""The whole pipeline through PgBouncer in transaction mode (`DB_TRANSACTION_POOLER=true`).

Few server connections under many client connections: consecutive transactions of one client
connection land on different server connections, which is where prepared statements cached by
name break. The API (ORM routes, the driver's submit and poll, a user key's locked
submission) and the workers (claim, write-back, sweeper) all run through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine
from shared.settings import Settings
from tests.support import pgbouncer
from tests.support.auth import bearer
from tests.support.fake_llm import FakeLLMServer
from tests.support.pgbouncer import PgBouncer
from tests.support.stack import Stack, running_stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        pgbouncer.binary() is None and not __import__("os").environ.get("CI"),
        reason="pgbouncer is not installed (Debian package pgbouncer; CI installs it)",
    ),
]


@pytest.fixture(scope="module")
def bouncer(settings: Settings) -> Iterator[PgBouncer]:
    running = PgBouncer(settings.database_url, server_connections=3).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def pooled_stack(
    settings: Settings,
    e2e_database: URL,
    bouncer: PgBouncer,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("pooled")
    through = bouncer.url(e2e_database)
    with running_stack(
        settings, through, fake_llm_server.url, workdir, workers=2, DB_TRANSACTION_POOLER="true"
    ) as running:
        yield running


def test_conversations_flow_through_a_transaction_pooler(
    pooled_stack: Stack, fake_llm: FakeLLMServer
) -> None:
    stack = pooled_stack
    user_id, model_id = stack.setup_model()
    key = stack.client.post(f"/users/{user_id}/api-keys", json={"name": "pooled"}).json()["key"]

    def submit(n: int) -> str:
        # Half as the admin, half with the user's key (its capped submission locks the user).
        headers = bearer(key) if n % 2 else None
        body = {"model_version_id": model_id, "prompt": f"pooled {n}"}
        if headers is None:
            body["user_id"] = user_id
        response = stack.client.post("/conversations", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(submit, range(40)))
    rows = stack.wait_all(ids)
    assert {row["status"] for row in rows.values()} == {"completed"}
    assert {row["response"] for row in rows.values()} == {f"echo: pooled {n}" for n in range(40)}
    assert stack.client.get(f"/users/{user_id}").status_code == 200
    listed = stack.client.get("/conversations", params={"user_id": user_id, "limit": 100})
    assert listed.headers["X-Total-Count"] == "40"


async def _statement_again_on_another_server(settings: Settings, dsn: str) -> None:
    """One client runs a statement, then again in its next transaction, while another client
    holds the server connection the first one used: the second run lands on the pooler's
    other server connection, where a statement prepared and cached by name does not exist."""
    engine = create_engine(settings, process_name="tests")
    holder = None
    try:
        async with engine.connect() as conn:
            query = text("SELECT count(*) FROM conversation")
            await conn.execute(query)
            await conn.commit()
            holder = await asyncpg.connect(dsn, statement_cache_size=0)
            await holder.execute("BEGIN")
            await holder.execute("SELECT 1")  # the idle server connection is now the holder's
            await conn.execute(query)
            await conn.commit()
    finally:
        if holder is not None:
            await holder.close()
        await engine.dispose()


def test_the_setting_is_what_makes_the_pooler_work(settings: Settings, e2e_database: URL) -> None:
    pooler = PgBouncer(settings.database_url, server_connections=2).start()
    try:
        through = pooler.url(e2e_database)
        dsn = through.set(drivername="postgresql").render_as_string(hide_password=False)
        plain = settings.model_copy(
            update={
                "DATABASE_URL": through.render_as_string(hide_password=False),
                "DB_STATEMENT_TIMEOUT_MS": 0,
            }
        )
        with pytest.raises(DBAPIError, match="prepared statement"):
            asyncio.run(_statement_again_on_another_server(plain, dsn))
        pooled = plain.model_copy(update={"DB_TRANSACTION_POOLER": True})
        asyncio.run(_statement_again_on_another_server(pooled, dsn))
    finally:
        pooler.stop()
