"""How Redis is reached: REDIS_URL (TLS, ACL user) alone, or the primary named by sentinels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis, SSLConnection
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from shared.redis_connection import connection_pool
from shared.settings import Settings, parse_host_ports
from tests.support.log_capture import make_settings


def test_sentinel_addresses_parse_and_a_bad_one_is_refused_at_start() -> None:
    assert parse_host_ports(" a:26379, 10.0.0.2:26380 ,") == [("a", 26379), ("10.0.0.2", 26380)]
    assert parse_host_ports("") == []
    for bad in ("a", "a:", ":1", "a:x", "a:0", "a:70000"):
        with pytest.raises(ValueError, match="host:port"):
            parse_host_ports(bad)
    with pytest.raises(ValidationError, match="REDIS_SENTINELS"):
        make_settings(REDIS_SENTINELS="redis-1")


def test_the_url_gives_tls_the_acl_user_and_the_database() -> None:
    settings: Settings = make_settings(REDIS_URL="rediss://app:secret@cache.internal:6380/3")
    pool = connection_pool(settings, socket_timeout=5)
    kwargs = pool.connection_kwargs
    assert pool.connection_class is SSLConnection
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 3)
    assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (
        "app",
        "secret",
        5,
    )


def test_with_sentinels_the_primary_comes_from_them_with_the_url_s_credentials() -> None:
    settings: Settings = make_settings(
        REDIS_URL="rediss://app:secret@ignored:1/2",
        REDIS_SENTINELS="s1:26379,s2:26379",
        REDIS_SENTINEL_MASTER="queue-primary",
        REDIS_SENTINEL_PASSWORD="sentinel-secret",
    )
    pool = connection_pool(settings, socket_connect_timeout=2)
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "queue-primary"
    assert pool.connection_class is SentinelManagedSSLConnection
    kwargs = pool.connection_kwargs
    assert "host" not in kwargs
    assert "port" not in kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "secret", 2)
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"]) for s in sentinels] == ["s1", "s2"]
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {
        "sentinel-secret"
    }


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis(connection_pool=connection_pool(settings, socket_timeout=5))
    yield client
    await client.aclose()


async def _idle_connection(client: Redis) -> AbstractConnection:
    """The one connection the pool holds, after it served a command and went back."""
    assert await client.ping()
    pool = client.connection_pool
    assert len(pool._available_connections) == 1
    connection: AbstractConnection = pool._available_connections[0]
    return connection


async def test_a_connection_the_server_closed_is_replaced_before_it_is_used(
    pool: Redis, settings: Settings
) -> None:
    connection = await _idle_connection(pool)
    victim = await pool.client_id()
    killer = Redis.from_url(settings.REDIS_URL)
    try:
        assert await killer.client_kill_filter(_id=victim) == 1
    finally:
        await killer.aclose()
    reader = connection._reader
    assert reader is not None
    async with asyncio.timeout(5):
        while not reader.at_eof():  # the event loop has seen the server hang up
            await asyncio.sleep(0.01)
    # Nothing to retry: the command goes out on a fresh connection.
    assert await pool.client_id() != victim


async def test_a_connection_with_bytes_nobody_asked_for_is_not_handed_out(
    pool: Redis, settings: Settings
) -> None:
    key = f"{settings.QUEUE_NAME}:stray-check"
    connection = await _idle_connection(pool)
    await pool.set(key, "value")
    # An answer left unread on the idle connection (as a command cut off mid-way leaves one).
    await connection.send_command("PING")
    reader = connection._reader
    assert reader is not None
    async with asyncio.timeout(5):
        while not reader._buffer:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
    try:
        assert await pool.get(key) == b"value"
    finally:
        await pool.delete(key)
