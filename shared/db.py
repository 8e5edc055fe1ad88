"""Engine and session factories; no connection is made at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import Settings

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(settings: Settings, *, process_name: str) -> AsyncEngine:
    """An asyncpg engine whose connections are tagged with the process name."""
    server_settings = {"application_name": f"{settings.SERVICE_NAME}-{process_name}"}
    if settings.DB_STATEMENT_TIMEOUT_MS:
        server_settings["statement_timeout"] = str(settings.DB_STATEMENT_TIMEOUT_MS)
    return create_async_engine(
        settings.database_url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT_SECONDS,
        # A connection killed by a database restart is noticed before use, not by a request.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": server_settings, "timeout": 5},
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
