"""Migrations are the only way the schema changes, so they must round-trip and match the models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.models import Base
from tests import database


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
