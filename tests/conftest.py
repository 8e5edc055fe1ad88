"""Fixtures every test package shares: a migrated database per run, a keyspace per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from api.main import create_app
from shared.db import SessionFactory, create_engine, create_session_factory
from shared.settings import Settings
from tests.support import database
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.fake_llm import FakeLLMServer

RUN_ID = uuid.uuid4().hex[:10]
# Of each process log a failed test leaves, this many last lines go into its report.
LOG_TAIL_LINES = 40


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran processes (their logs in its `tmp_path`) reports their logs'
    tails: a failure seen once, on a slow machine, can still be read afterwards. The fault
    tests' `make_stack` prints its own."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    workdir = funcargs.get("tmp_path")
    if report.failed and isinstance(workdir, Path) and "make_stack" not in funcargs:
        for log in sorted(workdir.rglob("*.log"))[:8]:
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"log {log.relative_to(workdir)}", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
def database_url() -> Iterator[URL]:
    with database.migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
def queue_name() -> str:
    """Jobs of this run go to their own queue, so parallel runs never take each other's."""
    return f"ai-eng-api-test:{RUN_ID}:queue"


@pytest.fixture(scope="session")
def redis_url(queue_name: str) -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    yield url
    _drop_run_keys(url, queue_name)


def _drop_run_keys(url: str, queue_name: str) -> None:
    """Leave the shared Redis as it was: this run's queues and the jobs still in them."""
    client = redis.Redis.from_url(url)
    try:
        for queue in client.scan_iter(match=f"{queue_name}*"):
            if client.type(queue) == b"zset":
                for job_id in client.zrange(queue, 0, -1):
                    client.delete(b"arq:job:" + job_id, b"arq:retry:" + job_id)
            client.delete(queue)
    finally:
        client.close()


@pytest.fixture(scope="session")
def settings(database_url: URL, queue_name: str, redis_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        REDIS_URL=redis_url,
        QUEUE_NAME=queue_name,
        ADMIN_API_KEY=ADMIN_KEY,
        OLLAMA_STARTUP_CHECK_ENABLED=False,
        LOG_FORMAT="HUMAN",
        LOG_LEVEL="WARNING",
    )


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """The Ollama/OpenAI stand-in: a real HTTP server on loopback, shared by the run."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain client for talking to loopback servers (no proxy settings from the env)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
async def clean_db(database_url: URL) -> AsyncIterator[None]:
    """Each test starts from empty tables."""
    await database.truncate_all(database_url)
    return


@pytest.fixture
async def session_factory(settings: Settings, clean_db: None) -> AsyncIterator[SessionFactory]:
    engine = create_engine(settings, process_name="tests")
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def session(session_factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    async with session_factory() as session:
        yield session


@pytest.fixture
async def app(settings: Settings, clean_db: None) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=ADMIN_HEADERS
    ) as client:
        yield client
