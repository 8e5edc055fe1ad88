"""Fixtures for end-to-end tests: a stack of the real API and worker processes over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support import database
from tests.support.fake_llm import FakeLLMServer
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def e2e_database(settings: Settings) -> Iterator[URL]:
    """The e2e processes get their own database: committed rows never meet other tests."""
    with database.migrated_database() as url:
        yield url


@pytest.fixture
def own_database() -> Iterator[URL]:
    """For a stack of the test's own: the module stack's sweeper would otherwise take its
    rows over (every sweeper sweeps the whole database) and answer them on another Redis."""
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
    with running_stack(settings, e2e_database, fake_llm_server.url, workdir, workers=2) as running:
        yield running
