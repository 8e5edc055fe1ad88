"""Fault-injection harness: real API and worker processes, each stack with its own Redis.

A test builds a stack with `make_stack(...)`, breaks something on purpose (kills a worker,
empties Redis, cuts database connections, upsets the LLM stand-in) and then asks
`stack.settle(ids)`: PostgreSQL, not the API, says whether every accepted conversation
ended completed or failed with a reason.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support import database
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import Process, free_port, start_api, start_worker, wait_until
from tests.support.stack import stack_env

SETTLED = frozenset({"completed", "failed"})
_FAILED = pytest.StashKey[bool]()
_NOISE = re.compile(r"recording health|sweep\(\)|sweep ●")


class RedisServer:
    """A throwaway `redis-server` on a port of its own: nothing on disk, free to kill."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start an empty server and wait until it answers PING."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with (self.workdir / f"redis-{self.port}.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def answers() -> bool:
            with suppress(redis.RedisError):
                return bool(client.ping())
            return False

        try:
            wait_until(answers, timeout=10, what=f"redis-server on port {self.port}")
        finally:
            client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: whatever it held is gone, as after a crash of a Redis without persistence."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)


@dataclass(frozen=True)
class Row:
    id: str
    prompt: str
    status: str
    attempts: int
    error_code: str | None
    error_message: str | None
    response: str | None


class Database:
    """Synchronous access to a stack's own database: the truth the assertions read."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.name = url.database
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _run(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self._dsn)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def rows(self, ids: list[str]) -> dict[str, Row]:
        records = self._run(
            "SELECT id::text AS id, prompt, status, attempts, error_code, error_message, response"
            " FROM conversation WHERE id = ANY($1::uuid[])",
            ids,
        )
        return {r["id"]: Row(**dict(r)) for r in records}

    def ids_of_user(self, user_id: str) -> list[str]:
        records = self._run(
            "SELECT id::text AS id FROM conversation WHERE user_id = $1::uuid", user_id
        )
        return [str(r["id"]) for r in records]

    def insert_pending(self, user_id: str, model_id: str, prompt: str) -> str:
        """A committed pending row and no job: what an API that died after its commit leaves."""
        (record,) = self._run(
            "INSERT INTO conversation (user_id, model_version_id, prompt)"
            " VALUES ($1::uuid, $2::uuid, $3) RETURNING id::text AS id",
            user_id,
            model_id,
            prompt,
        )
        return str(record["id"])

    def backends(self, process_name: str) -> int:
        """Connections a process kind (`api`, `worker`) holds open to this database."""
        (record,) = self._run(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1"
            " AND application_name LIKE '%-' || $2",
            self.name,
            process_name,
        )
        return int(record["n"])

    def terminate_backends(self) -> int:
        """Cut every connection to this stack's database (and only this one) but our own."""
        records = self._run(
            "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.name,
        )
        return sum(1 for r in records if r["cut"])


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


MakeStack = Callable[..., FaultStack]


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
