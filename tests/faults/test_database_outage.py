"""PostgreSQL cutting every connection while requests and generations are in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import MakeStack

pytestmark = pytest.mark.fault


def test_terminated_connections_cost_503s_at_most_and_lose_nothing(
    make_stack: MakeStack, fake_llm: FakeLLMServer
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=0.3)
    stack = make_stack(workers=2)
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    done = threading.Event()

    def clients() -> None:
        # Submit and poll the whole time, as real clients would.
        with httpx.Client(base_url=stack.base_url, timeout=15, headers=ADMIN_HEADERS) as client:
            for i in range(30):
                response = client.post(
                    "/conversations",
                    json={
                        "user_id": stack.user_id,
                        "model_version_id": stack.model_id,
                        "prompt": f"through the cuts {i}",
                    },
                )
                statuses[response.status_code] += 1
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                    statuses[client.get(f"/conversations/{accepted[-1]}").status_code] += 1
                time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=clients)
    thread.start()
    cuts = 0
    while not done.is_set():
        cuts += stack.db.terminate_backends()
        time.sleep(0.1)
    thread.join()
    assert cuts > 0
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
