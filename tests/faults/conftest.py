"""Fixtures for the fault-injection tests (tests/support/fault_stack.py holds the harness).

`make_stack(...)` gives a test stacks of its own, stopped when it ends; `shared_stack` is one
stack all the tests of a module share, started with the environment the module's
`shared_stack_env` fixture returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support import database
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import FaultStack, MakeStack, open_stack

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="module")
def fault_database(settings: Settings) -> Iterator[URL]:
    """The module's own database: cutting its connections touches no other test."""
    with database.migrated_database() as url:
        yield url


@pytest.fixture
def make_stack(
    request: pytest.FixtureRequest,
    settings: Settings,
    fault_database: URL,
    fake_llm: FakeLLMServer,
    tmp_path: Path,
) -> Iterator[MakeStack]:
    """`make_stack(workers=1, llm_url=None, api_env=None, **env)`: stopped when the test ends.

    On failure the tail of every process log is printed next to the assertion.
    """
    stacks: list[FaultStack] = []
    with ExitStack() as exits:

        def make(
            *,
            workers: int = 1,
            llm_url: str | None = None,
            api_env: dict[str, str] | None = None,
            **env: str,
        ) -> FaultStack:
            workdir = tmp_path / f"stack{len(stacks)}"
            workdir.mkdir()
            llm = llm_url or fake_llm.url
            stack = exits.enter_context(
                open_stack(
                    settings, fault_database, llm, workdir, workers=workers, api_env=api_env, **env
                )
            )
            stacks.append(stack)
            return stack

        yield make
        if request.node.stash.get(_FAILED, False):
            for stack in stacks:
                print(stack.log_tails())  # noqa: T201 - shown with the failure report


@pytest.fixture(scope="module")
def shared_stack_env() -> dict[str, str]:
    """Extra environment for `shared_stack`; a test module overrides this fixture to set it."""
    return {}


@pytest.fixture(scope="module")
def shared_stack(
    settings: Settings,
    fault_database: URL,
    fake_llm_server: FakeLLMServer,
    shared_stack_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FaultStack]:
    """The API and two workers, started once for all the tests of a module."""
    workdir = tmp_path_factory.mktemp("shared-stack")
    with open_stack(
        settings, fault_database, fake_llm_server.url, workdir, workers=2, **shared_stack_env
    ) as running:
        yield running
