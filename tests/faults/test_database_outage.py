"""PostgreSQL cutting every connection while requests and generations are in flight."""

from __future__ import annotations

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import MakeStack, submit_through_cuts

pytestmark = pytest.mark.fault


def test_terminated_connections_cost_503s_at_most_and_lose_nothing(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=0.3)
    stack = make_stack(workers=2)
    traffic = submit_through_cuts(stack, "through the cuts")
    statuses, accepted = traffic.statuses, traffic.accepted
    assert traffic.cuts > 0
    assert set(statuses) <= {200, 202, 503}, statuses
    assert statuses[202] > 0
    # A 503 whose commit had in fact landed leaves a row the client never heard of:
    # it must settle too, so every row of this user counts, not only the 202s.
    ids = stack.db.ids_of_user(stack.user_id)
    assert set(accepted) <= set(ids)
    rows = stack.settle(ids, timeout=30)
    assert {r.status for r in rows.values()} == {"completed"}
    stats = fake_llm.stats()
    twice = {r.prompt: stats.calls_for(r.prompt) for r in rows.values()}
    assert {prompt: n for prompt, n in twice.items() if n != 1} == {}
