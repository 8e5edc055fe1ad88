"""Redis behind Sentinel: the primary dies while conversations flow; nothing accepted is lost.

The API and the workers find the primary through the sentinels (`REDIS_SENTINELS`). When the
primary is killed, the sentinels promote the replica; jobs the dead primary had not passed on
are gone, and the sweeper finds their rows in PostgreSQL and queues them on the new primary.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from shared.queue import heartbeat_registry
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.fault_stack import MakeStack
from tests.support.processes import wait_until
from tests.support.redis_sentinel import MASTER, SentinelCluster

pytestmark = pytest.mark.fault


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    cluster = SentinelCluster(workdir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_primary_killed_mid_traffic_fails_over_and_loses_no_conversation(
    make_stack: MakeStack, fake_llm: FakeLLMServer, sentinel_cluster: SentinelCluster
) -> None:
    fake_llm.configure(mode="slow", delay_seconds=0.2)
    stack = make_stack(
        workers=2,
        REDIS_SENTINELS=sentinel_cluster.sentinels,
        REDIS_SENTINEL_MASTER=MASTER,
    )
    first_primary = sentinel_cluster.primary_port()
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    failed_over = threading.Event()
    done = threading.Event()

    def clients() -> None:
        # Submitting the whole time, before, during and after the failover.
        with httpx.Client(base_url=stack.base_url, timeout=15, headers=ADMIN_HEADERS) as client:
            n = 0
            after = 0
            while after < 15:
                response = client.post(
                    "/conversations",
                    json={
                        "user_id": stack.user_id,
                        "model_version_id": stack.model_id,
                        "prompt": f"through the failover {n}",
                    },
                )
                statuses[response.status_code] += 1
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                n += 1
                after += failed_over.is_set()
                time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=clients)
    thread.start()
    try:
        wait_until(lambda: len(accepted) >= 10, timeout=20, what="submissions before the kill")
        sentinel_cluster.kill_primary()
        wait_until(
            lambda: sentinel_cluster.primary_port() not in (None, first_primary),
            timeout=30,
            what="the sentinels to promote the replica",
        )
        failed_over.set()
    finally:
        failed_over.set()
        thread.join(timeout=60)
    assert done.is_set()
    # Redis away is never the client's problem: every submission was accepted.
    assert set(statuses) == {202}, statuses
    rows = stack.settle(accepted, timeout=60)
    assert {r.status for r in rows.values()} == {"completed"}
    # The workers went where the sentinels pointed: their heartbeats are on the new primary.
    promoted = redis.Redis(port=sentinel_cluster.primary_port() or 0, socket_timeout=2)
    try:
        assert promoted.zcard(heartbeat_registry(stack.env["QUEUE_NAME"])) == 2
    finally:
        promoted.close()
