"""A throwaway PostgreSQL database per test run, migrated by Alembic."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, make_url

ROOT = Path(__file__).resolve().parents[2]
TABLES = ('"user"', "api_key", "model_version", "conversation")


def admin_url() -> URL:
    """Where test databases are created; override with TEST_DATABASE_ADMIN_URL."""
    raw = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return make_url(raw)


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def new_database_name() -> str:
    return f"ai_eng_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(_dsn(admin_url()))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(name: str) -> URL:
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return admin_url().set(drivername="postgresql+asyncpg", database=name)


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def alembic_config(url: URL) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    # Percent signs would be read as interpolation by configparser.
    config.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def migrate(url: URL, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@contextmanager
def migrated_database() -> Iterator[URL]:
    """A new database at the latest migration, dropped on exit."""
    name = new_database_name()
    url = create_database(name)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(name)


async def truncate_all(dsn_url: URL) -> None:
    conn = await asyncpg.connect(_dsn(dsn_url))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    finally:
        await conn.close()
