"""What one benchmark run starts and removes: a database, a queue name and processes.

Everything listens on loopback. The API and the floor app run as one uvicorn process each,
with the same flags; workers run as `python -m worker`. Every process runs in the run's own
directory (so a developer's `.env` does not leak into the numbers) and logs there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import redis
from sqlalchemy.engine import URL

from tests.support import database
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY, bearer
from tests.support.processes import Process, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JOB_KEY_PREFIXES = ("arq:job:", "arq:retry:", "arq:in-progress:", "arq:result:")
START_TIMEOUT = 30.0


# --- the processes' own counters -----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) in MB, from /proc/<pid>/status (VmRSS, VmHWM)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, every process), from /proc/stat."""
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / CLOCK_TICKS


@dataclass
class CpuWindow:
    """CPU seconds used by `pids` (together) and by the whole machine since creation."""

    pids: list[int]
    started: float = field(init=False, default_factory=time.perf_counter)
    start: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.start = self._sample()

    def _sample(self) -> tuple[float, float]:
        return sum(cpu_seconds(pid) for pid in self.pids), machine_busy_seconds()

    def stop(self) -> CpuUse:
        own, machine = self._sample()
        wall = time.perf_counter() - self.started
        return CpuUse(own - self.start[0], machine - self.start[1], wall)


@dataclass(frozen=True)
class CpuUse:
    seconds: float
    machine_seconds: float
    wall: float

    @property
    def percent(self) -> float:
        """Of one core."""
        return 100 * self.seconds / self.wall if self.wall else 0.0

    @property
    def machine_percent(self) -> float:
        """Of one core: a 2-core machine is at most 200."""
        return 100 * self.machine_seconds / self.wall if self.wall else 0.0


def _shared_servers_seconds() -> float:
    """CPU of PostgreSQL and Redis on this machine: live processes, plus what the postmaster
    collected from backends that have exited (they serve this run, and maybe others)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name not in ("postgres", "redis-server"):
            continue
        fields = text.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
        if _is_postmaster(fields, name):
            total += int(fields[13]) + int(fields[14])
    return total / CLOCK_TICKS


def _is_postmaster(fields: list[str], name: str) -> bool:
    if name != "postgres":
        return False
    try:
        parent = Path(f"/proc/{fields[1]}/stat").read_text()
    except OSError:
        return False
    return "(postgres)" not in parent


def _own_seconds() -> float:
    """This process and every child it has waited for (servers, workers, wrk, ...)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class OtherLoad:
    """CPU the machine spent on work that is not this run's: busy time (/proc/stat) less this
    process and its children, less PostgreSQL and Redis. Read once every child has exited."""

    started: float = field(init=False, default_factory=time.perf_counter)
    start: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.start = (machine_busy_seconds(), _own_seconds(), _shared_servers_seconds())

    def percent(self) -> float:
        """Of one core, on average since creation."""
        busy, own, servers = machine_busy_seconds(), _own_seconds(), _shared_servers_seconds()
        other = (busy - self.start[0]) - (own - self.start[1]) - (servers - self.start[2])
        return max(0.0, 100 * other / (time.perf_counter() - self.started))


def wait_for_quiet(limit_percent: float = 30.0, max_wait: float = 20.0) -> float:
    """Give other work on the machine a little time to calm down; the last 2 s reading (%)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(2)
        busy = (machine_busy_seconds() - before) / 2 * 100
        if busy < limit_percent or time.monotonic() > deadline:
            return busy


# --- processes -----------------------------------------------------------------------------


def server_flags() -> list[str]:
    """The uvicorn flags of both servers: what `--loop auto --http auto` would pick, spelled
    out so the report can say it and both processes surely use the same."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return ["--no-access-log", "--loop", loop, "--http", http]


def spawn(name: str, args: list[str], env: Mapping[str, str], workdir: Path) -> Process:
    log_path = workdir / f"{name}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, *args], cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    return Process(name=name, popen=popen, log_path=log_path, env=dict(env))


def start_server(name: str, factory: str, env: Mapping[str, str], workdir: Path) -> Process:
    """`uvicorn --factory <factory>` on a free loopback port; waits for /health/live."""
    port = free_port()
    args = ["-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port)]
    process = spawn(name, [*args, *server_flags()], env, workdir)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive:
            raise RuntimeError(f"{name} exited:\n{process.log()}")
        with suppress(httpx.HTTPError):
            return httpx.get(f"{url}/health/live", timeout=1, trust_env=False).status_code == 200
        return False

    wait_until(up, timeout=START_TIMEOUT, what=f"{name} to answer")
    process.env["BASE_URL"] = url
    return process


def start_workers(count: int, env: Mapping[str, str], workdir: Path) -> list[Process]:
    """`count` worker processes, started side by side; returns once each logged it is ready."""
    workers = [spawn("worker", ["-m", "worker"], env, workdir) for _ in range(count)]

    def ready() -> bool:
        for worker in workers:
            if not worker.alive:
                raise RuntimeError(f"worker exited:\n{worker.log()}")
        return all("worker_ready" in worker.log() for worker in workers)

    try:
        wait_until(ready, timeout=START_TIMEOUT, interval=0.1, what="the workers to be ready")
    except BaseException:
        stop_all(workers)
        raise
    return workers


def stop_all(processes: list[Process], timeout: float = 20) -> None:
    """SIGTERM to all at once (they shut down side by side), then wait; SIGKILL stragglers."""
    for process in processes:
        with suppress(ProcessLookupError):
            process.signal(signal.SIGCONT)
            process.signal(signal.SIGTERM)
    for process in processes:
        try:
            process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the run's database and queue ----------------------------------------------------------


def redis_info(url: str, section: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        return cast(dict[str, Any], client.info(section))
    finally:
        client.close()


def zset_members(url: str, key: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return cast(list[bytes], client.zrange(key, 0, -1))
    finally:
        client.close()


def dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _query(url: URL, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def query(url: URL, sql: str, *args: object) -> list[asyncpg.Record]:
    """One statement on the run's database, on a connection of its own."""
    return asyncio.run(_query(url, sql, *args))


@dataclass
class Run:
    """The run's database, queue name and the environment every process of the stack gets."""

    run_id: str
    workdir: Path
    db_name: str = field(init=False)
    db_url: URL = field(init=False)
    queue_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.db_name = f"ai_eng_bench_{self.run_id}"
        self.queue_name = f"ai-eng-api-bench:{self.run_id}:queue"

    def create_database(self) -> None:
        self.db_url = database.create_database(self.db_name)
        database.migrate(self.db_url)

    def drop_database(self) -> None:
        database.drop_database(self.db_name)

    @property
    def floor_key(self) -> str:
        """The floor app's Redis list (its LPUSH target)."""
        return f"{self.queue_name}:floor"

    def env(self, llm_url: str, **extra: str) -> dict[str, str]:
        """The project defaults (`.env.example`), with this run's stores and what the
        benchmark must change: limits off (not what is measured), metrics on a free port."""
        return {
            "DATABASE_URL": self.db_url.render_as_string(hide_password=False),
            "REDIS_URL": REDIS_URL,
            "QUEUE_NAME": self.queue_name,
            "OLLAMA_BASE_URL": llm_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "ENVIRONMENT": "DEV",
            "LOG_FORMAT": "JSON",
            "LOG_LEVEL": "INFO",
            "WORKER_METRICS_HOST": "127.0.0.1",
            "WORKER_METRICS_PORT": "0",
            "SUBMIT_RATE_LIMIT": "off",
            "MAX_ACTIVE_CONVERSATIONS_PER_USER": "0",
            "QUEUE_MAX_DEPTH": "0",
            "FLOOR_LIST_KEY": self.floor_key,
            **extra,
        }

    def clear_conversations(self, redis_url: str = REDIS_URL) -> None:
        """No conversation and no queued job left: what one measurement did is not the next
        one's work. Users, model versions and keys stay."""
        ids = [str(r["id"]) for r in query(self.db_url, "SELECT id FROM conversation")]
        drop_queue_keys(redis_url, self.queue_name, ids)
        query(self.db_url, "TRUNCATE conversation CASCADE")  # with its webhook deliveries


def drop_queue_keys(redis_url: str, queue_name: str, conversation_ids: list[str]) -> None:
    """The queue's keys and the job keys of the given conversations; other keys stay."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(match=f"{queue_name}*", count=1000)]
        keys += [p + "conversation:" + cid for cid in conversation_ids for p in JOB_KEY_PREFIXES]
        for start in range(0, len(keys), 2000):
            client.delete(*keys[start : start + 2000])
    finally:
        client.close()


@dataclass(frozen=True)
class Tenant:
    """The user and model version the load submits for, and the user's own key."""

    user_id: str
    model_id: str
    user_key: str


def create_tenant(api_url: str) -> Tenant:
    tag = f"{time.time_ns()}"
    with httpx.Client(base_url=api_url, timeout=10, trust_env=False, headers=ADMIN_HEADERS) as c:
        user = c.post("/users", json={"email": f"bench-{tag}@example.com"})
        user.raise_for_status()
        model = c.post(
            "/model-versions",
            json={"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": tag},
        )
        model.raise_for_status()
        user_id = user.json()["id"]
        key = c.post(f"/users/{user_id}/api-keys", json={"name": "bench"})
        key.raise_for_status()
    tenant = Tenant(user_id=user_id, model_id=model.json()["id"], user_key=key.json()["key"])
    # The key works before any load relies on it.
    check = httpx.get(
        f"{api_url}/users/{user_id}", headers=bearer(tenant.user_key), timeout=10, trust_env=False
    )
    check.raise_for_status()
    return tenant
