"""Make the database ready: create it when missing, then apply every migration.

Run before the API and workers start (`make run`, the compose `migrate` service).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.settings import SettingsError, get_settings  # noqa: E402


async def ensure_database() -> None:
    url = get_settings().database_url
    name = url.database
    admin = url.set(drivername="postgresql", database="postgres")
    for attempt in range(30):
        try:
            conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=5)
            break
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"waiting for PostgreSQL at {url.host}:{url.port} ({type(exc).__name__})")
            await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
    else:
        raise SystemExit(f"PostgreSQL at {url.host}:{url.port} is not reachable")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    finally:
        await conn.close()


def main() -> None:
    try:
        get_settings()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    asyncio.run(ensure_database())
    command.upgrade(Config(str(ROOT / "alembic.ini")), "head")
    print("database is at the latest migration")


if __name__ == "__main__":
    main()
