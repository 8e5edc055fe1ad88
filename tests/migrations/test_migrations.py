"""Migrations are the only way the schema changes, so they must round-trip and match the models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.models import Base
from tests.support import database


@pytest.fixture
def empty_database() -> Iterator[URL]:
    name = database.new_database_name()
    url = database.create_database(name)
    try:
        yield url
    finally:
        database.drop_database(name)


def _diff(url: URL) -> list[object]:
    def compare(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async def run() -> list[object]:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _tables(url: URL) -> set[str]:
    async def run() -> set[str]:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                rows = await connection.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
                return {row[0] for row in rows}
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_downgrade_upgrade_round_trips(empty_database: URL) -> None:
    config = database.alembic_config(empty_database)
    command.upgrade(config, "head")
    assert {"user", "model_version", "conversation"} <= _tables(empty_database)
    command.downgrade(config, "base")
    assert _tables(empty_database) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert {"user", "model_version", "conversation"} <= _tables(empty_database)


def test_models_match_the_migrations(database_url: URL) -> None:
    assert _diff(database_url) == []


BEFORE_API_KEYS = "9ae7be97a623"
API_KEYS = "5c1d2e3f4a5b"
IDEMPOTENCY = "7d2e4f6a8b9c"
WEBHOOKS = "8e3f5a7b9c1d"
PRIORITIES = "a1b2c3d4e5f6"
QUEUE_WEIGHT = "b2c3d4e5f6a7"

_SEED = """
WITH u AS (INSERT INTO "user" (email) VALUES ('kept@example.com') RETURNING id),
     m AS (INSERT INTO model_version (provider, model_name, version_tag)
           VALUES ('ollama', 'llama3.2:3b', 'v1') RETURNING id),
     c AS (INSERT INTO conversation (user_id, model_version_id, prompt, status, response, attempts)
           SELECT u.id, m.id, 'a prompt', 'completed', 'an answer', 1 FROM u, m RETURNING id),
     p AS (INSERT INTO conversation (user_id, model_version_id, prompt)
           SELECT u.id, m.id, 'still waiting' FROM u, m RETURNING id)
INSERT INTO api_key (user_id, name, prefix, key_hash)
SELECT u.id, 'laptop', 'aek_abcd', repeat('a', 64) FROM u
"""


def _sql(url: URL, query: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
        try:
            return [dict(row) for row in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _content(url: URL) -> dict[str, list[dict[str, Any]]]:
    return {
        table: _sql(url, f"SELECT * FROM {table} ORDER BY id")
        for table in ('"user"', "model_version", "conversation")
    }


def test_downgrading_the_api_keys_migration_keeps_the_data_but_drops_every_user_key(
    empty_database: URL,
) -> None:
    """The decision (see the migration's docstring and docs/testing.md): the downgrade runs on
    a database with data and keeps users, model versions and conversations as they are; the
    user keys go with their table, so after upgrading again only the admin key works until
    users are issued new keys."""
    config = database.alembic_config(empty_database)
    command.upgrade(config, API_KEYS)
    _sql(empty_database, _SEED)
    before = _content(empty_database)
    assert [len(rows) for rows in before.values()] == [1, 1, 2]

    command.downgrade(config, BEFORE_API_KEYS)
    assert "api_key" not in _tables(empty_database)
    assert _content(empty_database) == before
    indexes = _sql(
        empty_database, "SELECT indexname FROM pg_indexes WHERE tablename = 'conversation'"
    )
    assert "ix_conversation_user_id_unfinished" not in {row["indexname"] for row in indexes}

    command.upgrade(config, API_KEYS)
    assert _content(empty_database) == before
    assert _sql(empty_database, "SELECT count(*) AS n FROM api_key") == [{"n": 0}]
    command.upgrade(config, "head")
    assert _diff(empty_database) == []


def test_downgrading_the_idempotency_migration_keeps_every_conversation_but_its_key(
    empty_database: URL,
) -> None:
    """The decision (see the migration's docstring): conversations stay as they are; their
    idempotency keys and body fingerprints go, so a retry after a downgrade is a new
    submission. Upgrading again brings the columns back empty."""
    config = database.alembic_config(empty_database)
    command.upgrade(config, IDEMPOTENCY)
    _sql(empty_database, _SEED)
    _sql(empty_database, "UPDATE conversation SET idempotency_key = 'k-' || id, request_hash = 'h'")
    before = _content(empty_database)

    command.downgrade(config, API_KEYS)
    kept = _content(empty_database)
    assert kept["conversation"] == [
        {k: v for k, v in row.items() if k not in ("idempotency_key", "request_hash")}
        for row in before["conversation"]
    ]
    assert (kept['"user"'], kept["model_version"]) == (before['"user"'], before["model_version"])

    command.upgrade(config, "head")
    keys = _sql(empty_database, "SELECT idempotency_key, request_hash FROM conversation")
    assert keys == [{"idempotency_key": None, "request_hash": None}] * 2
    assert _diff(empty_database) == []


def test_downgrading_the_webhooks_migration_keeps_every_conversation_but_its_callback(
    empty_database: URL,
) -> None:
    """The decision (see the migration's docstring): conversations stay as they are; their
    callback URLs and the delivery log go, so deliveries not yet made are never made.
    Upgrading again brings the column back empty and the log with no rows."""
    config = database.alembic_config(empty_database)
    command.upgrade(config, WEBHOOKS)
    _sql(empty_database, _SEED)
    _sql(empty_database, "UPDATE conversation SET callback_url = 'https://example.com/hook'")
    _sql(
        empty_database,
        "INSERT INTO webhook_delivery (conversation_id, url, webhook_id, attempts, history) "
        "SELECT id, callback_url, 'msg_' || id, 1, '[{\"attempt\": 1}]' FROM conversation",
    )
    before = _content(empty_database)

    command.downgrade(config, IDEMPOTENCY)
    assert "webhook_delivery" not in _tables(empty_database)
    kept = _content(empty_database)
    assert kept["conversation"] == [
        {k: v for k, v in row.items() if k != "callback_url"} for row in before["conversation"]
    ]
    assert (kept['"user"'], kept["model_version"]) == (before['"user"'], before["model_version"])

    command.upgrade(config, "head")
    assert (
        _sql(empty_database, "SELECT callback_url FROM conversation")
        == [{"callback_url": None}] * 2
    )
    assert _sql(empty_database, "SELECT count(*) AS n FROM webhook_delivery") == [{"n": 0}]
    assert _diff(empty_database) == []


def test_downgrading_the_priorities_migration_keeps_every_row_but_its_priority(
    empty_database: URL,
) -> None:
    """The decision (see the migration's docstring): rows stay as they are; priorities and key
    ceilings go. Upgrading again reads every conversation and key as `interactive`."""
    config = database.alembic_config(empty_database)
    command.upgrade(config, PRIORITIES)
    _sql(empty_database, _SEED)
    _sql(empty_database, "UPDATE conversation SET priority = 'batch'")
    _sql(empty_database, "UPDATE api_key SET max_priority = 'batch'")
    before = _content(empty_database)

    command.downgrade(config, WEBHOOKS)
    kept = _content(empty_database)
    assert kept["conversation"] == [
        {k: v for k, v in row.items() if k != "priority"} for row in before["conversation"]
    ]
    assert (kept['"user"'], kept["model_version"]) == (before['"user"'], before["model_version"])

    command.upgrade(config, "head")
    assert (
        _sql(empty_database, "SELECT priority FROM conversation")
        == [{"priority": "interactive"}] * 2
    )
    assert _sql(empty_database, "SELECT max_priority FROM api_key") == [
        {"max_priority": "interactive"}
    ]
    assert _diff(empty_database) == []


def test_downgrading_the_queue_weight_migration_keeps_every_user_but_its_weight(
    empty_database: URL,
) -> None:
    """The decision (see the migration's docstring): users stay; their weights go, and come
    back as 1 (equal shares) on the next upgrade."""
    config = database.alembic_config(empty_database)
    command.upgrade(config, QUEUE_WEIGHT)
    _sql(empty_database, _SEED)
    _sql(empty_database, 'UPDATE "user" SET queue_weight = 5')
    before = _content(empty_database)

    command.downgrade(config, PRIORITIES)
    kept = _content(empty_database)
    assert kept['"user"'] == [
        {k: v for k, v in row.items() if k != "queue_weight"} for row in before['"user"']
    ]
    assert (kept["conversation"], kept["model_version"]) == (
        before["conversation"],
        before["model_version"],
    )

    command.upgrade(config, "head")
    assert _sql(empty_database, 'SELECT queue_weight FROM "user"') == [{"queue_weight": 1}]
    assert _diff(empty_database) == []
