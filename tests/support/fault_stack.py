"""Fault-injection stacks: real API and worker processes, each stack with its own Redis.

A test builds a stack (`open_stack`, or the `make_stack` fixture in tests/faults), breaks
something on purpose (kills a worker, empties Redis, cuts database connections, upsets the
LLM stand-in) and then asks `stack.settle(ids)`: PostgreSQL, not the API, says whether every
accepted conversation ended completed or failed with a reason.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import Process, start_api, start_worker, wait_until
from tests.support.redis_server import RedisServer
from tests.support.stack import stack_env
from tests.support.stack_database import SETTLED, Database, Row

_NOISE = re.compile(r"recording health|sweep\(\)|sweep ●")


@dataclass
class FaultStack:
    env: dict[str, str]
    workdir: Path
    redis: RedisServer
    db: Database
    api: Process | None = None
    base_url: str = ""
    workers: list[Process] = field(default_factory=list)
    client: httpx.Client = field(init=False)
    user_id: str = ""
    model_id: str = ""

    def start_api(self, **extra_env: str) -> None:
        self.api, self.base_url = start_api({**self.env, **extra_env}, self.workdir)
        self.client = httpx.Client(base_url=self.base_url, timeout=15, headers=ADMIN_HEADERS)
        tag = str(time.monotonic_ns())
        user = self.client.post("/users", json={"email": f"{tag}@example.com"})
        model = self.client.post(
            "/model-versions",
            json={"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": tag},
        )
        assert user.status_code == 201, user.text
        assert model.status_code == 201, model.text
        self.user_id, self.model_id = user.json()["id"], model.json()["id"]

    def add_worker(self, *, wait: bool = True, **extra_env: str) -> Process:
        worker = start_worker({**self.env, **extra_env}, self.workdir, wait=wait)
        self.workers.append(worker)
        return worker

    def wait_ready(self, workers: list[Process]) -> None:
        """Wait until each worker finished its start-up (the workers start side by side)."""

        def ready(worker: Process) -> bool:
            if not worker.alive:
                raise RuntimeError(f"worker exited:\n{worker.log()}")
            return "worker_ready" in worker.log()

        for worker in workers:
            wait_until(lambda w=worker: ready(w), timeout=30, what="a worker to be ready")

    def post(self, prompt: str) -> httpx.Response:
        return self.client.post(
            "/conversations",
            json={"user_id": self.user_id, "model_version_id": self.model_id, "prompt": prompt},
        )

    def submit(self, prompt: str) -> str:
        """Submit over HTTP; returns the id of the accepted (202) conversation."""
        response = self.post(prompt)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def settle(self, ids: list[str], *, timeout: float = 30) -> dict[str, Row]:
        """Wait until every conversation is completed or failed; fail naming the stuck ones.

        Every failure must carry its reason (code and message): failed silently is lost.
        """
        rows: dict[str, Row] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.db.rows(ids)
            if len(rows) == len(ids) and all(r.status in SETTLED for r in rows.values()):
                break
            time.sleep(0.2)
        missing = [cid for cid in ids if cid not in rows]
        stuck = [(r.prompt, r.status, r.attempts) for r in rows.values() if r.status not in SETTLED]
        assert not missing, f"{len(missing)} accepted conversations have no row"
        assert not stuck, f"{len(stuck)} conversations never settled: {stuck[:5]}"
        unexplained = [r for r in rows.values() if r.status == "failed" and not r.error_message]
        assert not unexplained, f"failed without a reason: {unexplained[:3]}"
        return rows

    def queued_generations(self) -> int:
        """Generation jobs still in the queue (the sweeper's next cron tick is not counted)."""
        client = self.redis.client()
        try:
            members = client.zrange(self.env["QUEUE_NAME"], 0, -1)
        finally:
            client.close()
        return sum(1 for m in members if m.startswith(b"conversation:"))

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each process log, without the once-a-second heartbeat and sweep."""
        parts = []
        for process in [*([self.api] if self.api else []), *self.workers]:
            kept = [line for line in process.log().splitlines() if not _NOISE.search(line)]
            tail = kept[-lines:]
            parts.append(f"--- {process.name} {process.log_path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        with suppress(AttributeError):
            self.client.close()
        processes = [*self.workers, *([self.api] if self.api else [])]
        # All told at once, then waited for: they shut down side by side.
        for process in processes:
            process.signal(signal.SIGTERM)
        for process in processes:
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.kill()


@dataclass
class CutTraffic:
    """What clients saw while the database cut every connection, and how many were cut."""

    statuses: Counter[int]
    accepted: list[str]
    cuts: int


def submit_through_cuts(stack: FaultStack, prompt: str, *, count: int = 30) -> CutTraffic:
    """Submit and poll `count` conversations, as real clients would, while the stack's
    database connections are cut every 0.1 s."""
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    done = threading.Event()

    def clients() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=15, headers=ADMIN_HEADERS) as client:
            for i in range(count):
                response = client.post(
                    "/conversations",
                    json={
                        "user_id": stack.user_id,
                        "model_version_id": stack.model_id,
                        "prompt": f"{prompt} {i}",
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
    return CutTraffic(statuses, accepted, cuts)


def wait_for_calls(llm: FakeLLMServer, prompt: str, count: int, *, timeout: float = 20) -> None:
    """Block until the stand-in has received `count` generation calls for `prompt`."""
    wait_until(
        lambda: llm.stats().calls_for(prompt) >= count,
        timeout=timeout,
        interval=0.02,
        what=f"call {count} for {prompt!r}",
    )


@contextmanager
def open_stack(
    settings: Settings,
    db_url: URL,
    llm_url: str,
    workdir: Path,
    *,
    workers: int,
    api_env: dict[str, str] | None = None,
    **env: str,
) -> Iterator[FaultStack]:
    """A stack with a fresh Redis of its own, the API, and `workers` worker processes.

    `env` applies to every process, `api_env` to the API alone.
    """
    redis_server = RedisServer(workdir).start()
    own = settings.model_copy(update={"DATABASE_URL": db_url.render_as_string(hide_password=False)})
    full_env = stack_env(own, llm_url, workdir, REDIS_URL=redis_server.url, **env)
    stack = FaultStack(env=full_env, workdir=workdir, redis=redis_server, db=Database(db_url))
    try:
        starting = [stack.add_worker(wait=False) for _ in range(workers)]
        stack.start_api(**(api_env or {}))
        stack.wait_ready(starting)
        yield stack
    finally:
        stack.stop()


# `make_stack(workers=1, llm_url=None, api_env=None, **env)`, the fixture of tests/faults.
MakeStack = Callable[..., FaultStack]
