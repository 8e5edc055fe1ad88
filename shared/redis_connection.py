"""Connections to Redis, one way for every client of both processes: a URL, or Sentinel.

`REDIS_URL` carries the scheme (`rediss://` for TLS), the ACL user and password, and the
database. With `REDIS_SENTINELS` set, the primary's address comes from the sentinels instead
of the URL's host: a connection opened after a failover goes to the new primary, and one open
to the old primary fails and is replaced, so callers see a failover as a short Redis outage.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, SSLConnection
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from shared.settings import Settings


def connection_pool(settings: Settings, **options: Any) -> ConnectionPool:
    """A pool for `settings`' Redis; `options` are connection options (timeouts, ...)."""
    if not settings.REDIS_SENTINELS:
        return ConnectionPool.from_url(settings.REDIS_URL, **options)
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
    pool: ConnectionPool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        settings.REDIS_SENTINEL_MASTER, manager, **kwargs
    )
    return pool
