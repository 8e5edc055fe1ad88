"""Engine and session factories; no connection is made at import time."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, Protocol, cast

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import greenlet_spawn

from shared.detail_spans import DeferringTracer
from shared.logs import redact_prompt
from shared.settings import Settings

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(settings: Settings, *, process_name: str) -> AsyncEngine:
    """An asyncpg engine whose connections are tagged with the process name.

    Its errors carry no user content unless `LOG_PROMPTS` is on: they end up in tracebacks,
    and the values of a failed statement are prompts, answers and emails.
    """
    server_settings = {"application_name": f"{settings.SERVICE_NAME}-{process_name}"}
    connect_args: dict[str, Any] = {"server_settings": server_settings, "timeout": 5}
    if settings.DB_TRANSACTION_POOLER:
        connect_args.update(_TRANSACTION_POOLER_ARGS)
    elif settings.DB_STATEMENT_TIMEOUT_MS:
        server_settings["statement_timeout"] = str(settings.DB_STATEMENT_TIMEOUT_MS)
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT_SECONDS,
        # No ping on every checkout (two round trips each time): see `_ping_when_idle`.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=connect_args,
        # Otherwise every error message lists the statement's parameters.
        hide_parameters=not settings.LOG_PROMPTS,
    )
    if not settings.LOG_PROMPTS:
        event.listen(engine.sync_engine, "handle_error", _redact_row_values(settings))
    _ping_when_idle(engine)
    return engine


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


# Behind a transaction pooler the server connection under a client connection changes between
# transactions: a statement prepared under a name on one is unknown (or another's) on the next.
# The driver's cache is off (its statements are unnamed) and SQLAlchemy's, which must prepare,
# names each statement uniquely and never reuses it.
_TRANSACTION_POOLER_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}


# A connection back in the pool this recently was just working; one idle longer is pinged.
PING_AFTER_IDLE_SECONDS = 5.0
_RETURNED_AT = "returned_at"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only when it sat idle, so busy traffic pays no
    round trips for it. A connection killed by a database restart while the service was
    quiet is replaced before any request sees it; one killed in the middle of traffic fails
    the request using it (503, `Retry-After`) and is replaced by the pool for the next."""
    pool, dialect = engine.sync_engine.pool, engine.dialect

    def checkin(_: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool drops this connection and checks out (or opens) another.
                raise DisconnectionError(str(exc)) from exc
            raise

    event.listen(pool, "checkin", checkin)
    event.listen(pool, "checkout", checkout)


def _redact_row_values(settings: Settings) -> Callable[[ExceptionContext], None]:
    """PostgreSQL's DETAIL line quotes the values a write was refused for: the taken email of
    a unique violation, the whole failing row (prompt included) of a check. It is in the
    driver's error and copied into SQLAlchemy's messages; all three copies are redacted."""

    def redact(context: ExceptionContext) -> None:
        wrapped = context.original_exception
        driver_error = wrapped.__cause__
        detail = getattr(driver_error, "detail", None)
        if not isinstance(detail, str) or not detail:
            return
        redacted = redact_prompt(detail, settings)
        driver_error.detail = redacted  # type: ignore[union-attr]  # asyncpg's error, as checked
        for error in (wrapped, context.sqlalchemy_exception):
            if error is not None and error.args and isinstance(error.args[0], str):
                error.args = (error.args[0].replace(detail, redacted), *error.args[1:])

    return redact


def is_db_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection: worth a retry (worker)
    or a 503 (API), unlike an error about the statement itself."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, OperationalError | InterfaceError | PoolTimeoutError | ConnectionError | TimeoutError
    )


class DatabaseUnavailableError(ConnectionError):
    """The database could not be reached, or dropped the connection during a statement."""


class DriverTransaction(Protocol):
    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> Any: ...


class DriverConnection(Protocol):
    """What the hot paths use of an asyncpg connection (asyncpg ships no type hints)."""

    async def fetchrow(self, query: str, *args: Any) -> Mapping[str, Any] | None: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    def transaction(self) -> DriverTransaction: ...
    def is_closed(self) -> bool: ...


# What a lost or unreachable server looks like from the driver (a statement's own errors are
# other `PostgresError`s and leave the connection usable).
_DRIVER_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[DriverConnection]:
    """A pooled connection used through the driver itself, for the few statements on the
    request path that are worth a round trip each and nothing more: no session, no implicit
    BEGIN, no ORM. A statement outside `transaction()` commits on its own.

    A connection the error left closed (or in an unknown state) is dropped from the pool, and
    a lost server is raised as `DatabaseUnavailableError` (503 in the API, a retry in the
    worker).
    """
    try:
        pooled = await engine.raw_connection()
    except _DRIVER_CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError("the database is unreachable") from exc
    driver = cast(DriverConnection, pooled.driver_connection)
    try:
        yield driver
    except BaseException as exc:
        lost = driver.is_closed() or isinstance(exc, _DRIVER_CONNECTION_ERRORS)
        if lost or not isinstance(exc, asyncpg.PostgresError):
            # Cancelled mid-statement, or gone: its protocol state cannot be trusted.
            await greenlet_spawn(pooled.invalidate, exc if isinstance(exc, Exception) else None)
        if lost:
            raise DatabaseUnavailableError("the database connection was lost") from exc
        raise
    finally:
        # The pool's own I/O (closing an overflow connection) runs where SQLAlchemy's async
        # bridge expects it.
        await greenlet_spawn(pooled.close)


# Inside an API request its spans are kept only if the request was slow or failed.
_tracer = DeferringTracer(trace.get_tracer("ai_eng_api.db"))


def statement_span(operation: str, table: str) -> AbstractContextManager[Span]:
    """The span of one statement run on the driver (the SQLAlchemy instrumentation only sees
    statements that go through SQLAlchemy), with the attributes its spans carry."""
    return _tracer.start_as_current_span(
        f"{operation} {table}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.operation.name": operation,
            "db.collection.name": table,
        },
    )


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(session_factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One transaction: commits when the block succeeds, rolls back when it raises."""
    async with session_factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
