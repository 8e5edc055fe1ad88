"""The nothing-lost guarantees behind PgBouncer in transaction mode (`DB_TRANSACTION_POOLER`):
a worker killed mid-generation, and PostgreSQL cutting the pooler's server connections while
requests and generations flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support import pgbouncer
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import (
    FaultStack,
    open_stack,
    submit_through_cuts,
    wait_for_calls,
)
from tests.support.pgbouncer import PgBouncer
from tests.support.stack_database import Database

pytestmark = [
    pytest.mark.fault,
    pytest.mark.skipif(
        pgbouncer.binary() is None and not __import__("os").environ.get("CI"),
        reason="pgbouncer is not installed (Debian package pgbouncer; CI installs it)",
    ),
]


@pytest.fixture
def pooled(
    settings: Settings, fault_database: URL, fake_llm: FakeLLMServer, tmp_path: Path
) -> Iterator[FaultStack]:
    bouncer = PgBouncer(settings.database_url, server_connections=4).start()
    try:
        with open_stack(
            settings,
            bouncer.url(fault_database),
            fake_llm.url,
            tmp_path,
            workers=2,
            DB_TRANSACTION_POOLER="true",
        ) as stack:
            # The test's own reads go straight to PostgreSQL: only the service is pooled.
            stack.db = Database(fault_database)
            yield stack
    finally:
        bouncer.stop()


def test_a_generation_killed_with_its_worker_is_finished_by_another(
    pooled: FaultStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(hold=True)
    prompt = "pooled and killed"
    cid = pooled.submit(prompt)
    wait_for_calls(fake_llm, prompt, 1)
    # The worker whose log names the conversation holds it.
    holder = next(w for w in pooled.workers if cid in w.log())
    holder.kill()
    fake_llm.configure(hold=False)
    row = pooled.settle([cid], timeout=60)[cid]
    assert row.status == "completed"


def test_cut_server_connections_cost_503s_at_most_and_lose_nothing(
    pooled: FaultStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=0.2)
    traffic = submit_through_cuts(pooled, "pooled through the cuts")
    statuses, accepted = traffic.statuses, traffic.accepted
    assert traffic.cuts > 0
    assert set(statuses) <= {200, 202, 503}, statuses
    assert statuses[202] > 0
    ids = pooled.db.ids_of_user(pooled.user_id)
    assert set(accepted) <= set(ids)
    rows = pooled.settle(ids, timeout=60)
    assert {r.status for r in rows.values()} == {"completed"}
