"""Connections to Redis, one way for every client of both processes: a URL, or Sentinel.

`REDIS_URL` carries the scheme (`rediss://` for TLS), the ACL user and password, and the
database. With `REDIS_SENTINELS` set, the primary's address comes from the sentinels instead
of the URL's host: a connection opened after a failover goes to the new primary, and one open
to the old primary fails and is replaced, so callers see a failover as a short Redis outage.

Before a pooled connection is handed out, redis-py makes sure it holds no stray data and was
not closed by the server by trying a read with a zero timeout: a cancelled read, a raised and
caught timeout and an event-loop turn, under the pool's lock, for every command (a third of
what a command costs here). The pools below look at what the event loop already received
instead: the connection's buffered bytes and its end-of-stream mark. A connection with either
is reconnected, as redis-py does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool, SSLConnection
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from shared.settings import Settings


def connection_pool(settings: Settings, **options: Any) -> ConnectionPool:
    """A pool for `settings`' Redis; `options` are connection options (timeouts, ...)."""
    if not settings.REDIS_SENTINELS:
        return CheckedPool.from_url(settings.REDIS_URL, **options)
    kwargs: dict[str, Any] = {**parse_url(settings.REDIS_URL), **options}
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is SSLConnection:
        kwargs["ssl"] = True
    password = settings.REDIS_SENTINEL_PASSWORD
    sentinel_kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
    if password is not None and password.get_secret_value():
        sentinel_kwargs["password"] = password.get_secret_value()
    # redis-py's Sentinel classes carry no annotations.
    manager = Sentinel(settings.redis_sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    pool: ConnectionPool = CheckedSentinelPool(  # type: ignore[no-untyped-call]
        settings.REDIS_SENTINEL_MASTER, manager, **kwargs
    )
    return pool


def _stale(connection: AbstractConnection) -> bool:
    """Bytes nobody asked for are waiting, or the server closed the connection."""
    reader: asyncio.StreamReader | None = getattr(connection, "_reader", None)
    return reader is not None and (bool(reader._buffer) or reader.at_eof())  # type: ignore[attr-defined]


async def _ensure_connection(connection: AbstractConnection) -> None:
    await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    if _stale(connection):
        await connection.disconnect()
        await connection.connect()  # type: ignore[no-untyped-call]


class CheckedPool(ConnectionPool):
    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await _ensure_connection(connection)


class CheckedSentinelPool(SentinelConnectionPool):
    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await _ensure_connection(connection)
