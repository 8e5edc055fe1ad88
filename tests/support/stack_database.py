"""A stack's own database seen from outside its processes: the truth the assertions read.

`Database` reads and writes it synchronously (one connection per call), so a test, or the
soak run, can check what PostgreSQL holds while the API and workers keep running.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

# A conversation in one of these statuses is finished: it changes no more.
SETTLED = frozenset({"completed", "failed"})


@dataclass(frozen=True)
class Row:
    id: str
    prompt: str
    status: str
    attempts: int
    error_code: str | None
    error_message: str | None
    response: str | None
    created_at: datetime
    started_at: datetime | None
    # Set by a claim, cleared by every write-back and by the sweeper's reclaim.
    lease_expires_at: datetime | None


class Database:
    """Synchronous access to a stack's own database: the truth the assertions read."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.name = url.database
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _run(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self._dsn)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def rows(self, ids: list[str]) -> dict[str, Row]:
        records = self._run(
            "SELECT id::text AS id, prompt, status, attempts, error_code, error_message, response,"
            " created_at, started_at, lease_expires_at"
            " FROM conversation WHERE id = ANY($1::uuid[])",
            ids,
        )
        return {r["id"]: Row(**dict(r)) for r in records}

    def ids_of_user(self, user_id: str) -> list[str]:
        records = self._run(
            "SELECT id::text AS id FROM conversation WHERE user_id = $1::uuid", user_id
        )
        return [str(r["id"]) for r in records]

    def insert_pending(self, user_id: str, model_id: str, prompt: str) -> str:
        """A committed pending row and no job: what an API that died after its commit leaves."""
        (record,) = self._run(
            "INSERT INTO conversation (user_id, model_version_id, prompt)"
            " VALUES ($1::uuid, $2::uuid, $3) RETURNING id::text AS id",
            user_id,
            model_id,
            prompt,
        )
        return str(record["id"])

    def backends(self, process_name: str) -> int:
        """Connections a process kind (`api`, `worker`) holds open to this database."""
        (record,) = self._run(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1"
            " AND application_name LIKE '%-' || $2",
            self.name,
            process_name,
        )
        return int(record["n"])

    def backend_starts(self, process_name: str) -> list[datetime]:
        """When each connection a process kind holds open to this database was opened."""
        records = self._run(
            "SELECT backend_start FROM pg_stat_activity WHERE datname = $1"
            " AND application_name LIKE '%-' || $2 ORDER BY backend_start",
            self.name,
            process_name,
        )
        return [r["backend_start"] for r in records]

    def terminate_backends(self) -> int:
        """Cut every connection to this stack's database (and only this one) but our own."""
        records = self._run(
            "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.name,
        )
        return sum(1 for r in records if r["cut"])
