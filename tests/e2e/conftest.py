"""Fixtures for end-to-end tests: a stack of the real API and worker processes over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support import database
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import start_api
from tests.support.stack import Stack, stack_env


@pytest.fixture(scope="module")
def e2e_database(settings: Settings) -> Iterator[URL]:
    """The e2e processes get their own database: committed rows never meet other tests."""
    with database.migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    settings: Settings,
    e2e_database: URL,
    fake_llm_server: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    own = settings.model_copy(
        update={"DATABASE_URL": e2e_database.render_as_string(hide_password=False)}
    )
    env = stack_env(own, fake_llm_server.url, workdir)
    api, base_url = start_api(env, workdir)
    running = Stack(base_url=base_url, api=api, env=env, workdir=workdir)
    try:
        running.add_worker()
        running.add_worker()
        yield running
    finally:
        running.stop()
