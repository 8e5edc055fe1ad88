"""Fair scheduling and priorities through the real processes: a user with a few submissions
is not queued behind another user's flood, and interactive work overtakes batch work.

The model server takes two requests at once (`LLM_SERVER_CAPACITY=2`), so the flood waits in
the queue; who starts when is read from the rows (PostgreSQL's clock on both ends), so the
assertions are about order, not about how fast this machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

FLOOD = 40
LIGHT = 4
CAPACITY = 2
# What may still start while a light conversation waits, in fair order: the flood's jobs that
# held the capacity's admission tokens when it was queued (claimed just after its submit), and
# a tie of ranks, with one to spare. First-in-first-out it is the whole flood still queued.
BOUND = CAPACITY + 2


@pytest.fixture
def stack(
    settings: Settings, own_database: URL, fake_llm: FakeLLMServer, tmp_path: Path
) -> Iterator[Stack]:
    fake_llm.configure(mode="slow", delay_seconds=0.2)
    with running_stack(
        settings,
        own_database,
        fake_llm.url,
        tmp_path,
        workers=2,
        LLM_SERVER_CAPACITY=str(CAPACITY),
        WORKER_MAX_JOBS="50",
    ) as running:
        yield running


def _at(row: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(row[field])


def _overtaken(rows: dict[str, dict[str, Any]], flood: list[str], light: list[str]) -> int:
    """The most flood conversations that started while one light conversation waited (from
    its submit to its start)."""
    return max(
        sum(
            1
            for f in flood
            if _at(rows[i], "created_at") < _at(rows[f], "started_at") < _at(rows[i], "started_at")
        )
        for i in light
    )


def _waiting_at(rows: dict[str, dict[str, Any]], flood: list[str], light: list[str]) -> int:
    first_submit = min(_at(rows[i], "created_at") for i in light)
    return sum(1 for i in flood if _at(rows[i], "started_at") > first_submit)


def test_a_light_user_is_not_queued_behind_another_users_flood(stack: Stack) -> None:
    flooder, model = stack.setup_model()
    light_user = stack.client.post("/users", json={"email": "light@example.com"}).json()["id"]
    flood = [stack.submit(flooder, model, f"flood {n}")["id"] for n in range(FLOOD)]
    light = [stack.submit(light_user, model, f"light {n}")["id"] for n in range(LIGHT)]
    rows = stack.wait_all(flood + light, timeout=120)
    assert {row["status"] for row in rows.values()} == {"completed"}
    # The flood was still mostly waiting when the light user came...
    assert _waiting_at(rows, flood, light) >= FLOOD // 2
    # ...and the light user's conversations took turns with it, not places behind it.
    assert _overtaken(rows, flood, light) <= BOUND


def test_interactive_work_overtakes_the_same_users_batch_work(stack: Stack) -> None:
    user, model = stack.setup_model()
    batch = [stack.submit(user, model, f"batch {n}", priority="batch")["id"] for n in range(FLOOD)]
    interactive = [stack.submit(user, model, f"now {n}")["id"] for n in range(LIGHT)]
    rows = stack.wait_all(batch + interactive, timeout=120)
    assert {row["status"] for row in rows.values()} == {"completed"}
    assert {rows[i]["priority"] for i in batch} == {"batch"}
    assert _waiting_at(rows, batch, interactive) >= FLOOD // 2
    assert _overtaken(rows, batch, interactive) <= BOUND
