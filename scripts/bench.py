"""Benchmark on this machine: submit latency, pipeline throughput and memory.

    .venv/bin/python -m scripts.bench [--quick]

It starts, and removes at the end, all it needs: a throwaway PostgreSQL database, its own
queue name on the local Redis, the stand-in LLM as a process, the API (uvicorn, one process)
and one or two workers. Every loop is bounded by a count and a time limit. It prints the
tables and writes docs/benchmarks.md, keeping that file's hand-written "Reading the numbers".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy.engine import URL

from tests.support import database
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.fake_llm_process import FakeLLMProcess
from tests.support.processes import Process, start_api, start_worker

ROOT = Path(__file__).resolve().parent.parent

DOC = ROOT / "docs" / "benchmarks.md"
READING = "## Reading the numbers"
REDIS_URL = "redis://127.0.0.1:6379/0"
LEVELS = (1, 8, 32)
LEVEL_SECONDS = 60.0  # per load level, whatever the count
DRAIN_SECONDS = 150.0  # per pipeline scenario
BURST_CONCURRENCY = 8  # how the pipeline's conversations are submitted
QUIET_PERCENT, QUIET_WAIT_SECONDS = 30.0, 120.0  # before starting, of the machine's 200 %
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JOB_KEY_PREFIXES = (b"arq:job:", b"arq:retry:", b"arq:in-progress:", b"arq:result:")

Row = list[str]
Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Scenario:
    delay_ms: int
    workers: int
    max_jobs: int


SCENARIOS = [Scenario(d, w, j) for d, j in ((0, 10), (200, 10), (200, 50)) for w in (1, 2)]


@dataclass
class Load:
    """What one bounded run of requests did."""

    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Bench:
    """The running stack, and the table rows filled in as it is measured."""

    api: Process
    base_url: str
    env: dict[str, str]
    llm: FakeLLMProcess
    db_url: URL
    submit: list[Row] = field(default_factory=list)
    pipeline: list[Row] = field(default_factory=list)
    memory: list[Row] = field(default_factory=list)


def pct(values: list[float], q: float) -> str:
    """Nearest-rank percentile, formatted."""
    if not values:
        return "—"
    ordered = sorted(values)
    return f"{ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]:.1f}"


def tally(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def rss_mb(process: Process) -> str:
    status = Path(f"/proc/{process.popen.pid}/status").read_text()
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return f"{int(kb) / 1024:.0f}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, every process), from /proc/stat."""
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / CLOCK_TICKS


@dataclass
class Cpu:
    """CPU used since creation, in % of one core: by each group of pids, this process, all."""

    pids: list[list[int]]
    start: list[float] = field(init=False)
    started: float = field(init=False, default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.start = self._sample()

    def _sample(self) -> list[float]:
        groups = [sum(cpu_seconds(pid) for pid in group) for group in self.pids]
        return [*groups, time.process_time(), machine_busy_seconds()]

    def percent(self) -> str:
        wall = time.perf_counter() - self.started
        used = [
            100 * (end - start) / wall
            for start, end in zip(self.start, self._sample(), strict=True)
        ]
        return " / ".join(f"{value:.0f}" for value in used)


async def load(base_url: str, request: Request, *, total: int, concurrency: int) -> Load:
    """Send `total` requests from `concurrency` lanes; stop early at LEVEL_SECONDS."""
    result, indexes = Load(), iter(range(total))
    deadline = time.monotonic() + LEVEL_SECONDS
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=30, trust_env=False, headers=ADMIN_HEADERS
    )

    async def lane() -> None:
        for index in indexes:
            if time.monotonic() > deadline:
                result.outcomes["not sent: time limit"] += 1
                continue
            started = time.perf_counter()
            try:
                response = await request(client, index)
            except httpx.HTTPError as exc:
                result.outcomes[type(exc).__name__] += 1
                continue
            if response.status_code not in (200, 202):
                result.outcomes[f"HTTP {response.status_code}"] += 1
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code == 202:
                result.ids.append(response.json()["id"])

    async with client:
        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def submitter(user_id: str, model_id: str, tag: str) -> Request:
    async def post(client: httpx.AsyncClient, index: int) -> httpx.Response:
        body = {"user_id": user_id, "model_version_id": model_id, "max_tokens": 64}
        return await client.post("/conversations", json={**body, "prompt": f"{tag} #{index}"})

    return post


def poller(ids: list[str]) -> Request:
    async def get(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.get(f"/conversations/{ids[index % len(ids)]}")

    return get


def new_user_and_model(base_url: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(
        base_url=base_url, timeout=10, trust_env=False, headers=ADMIN_HEADERS
    ) as client:
        user = client.post("/users", json={"email": f"bench-{tag}@example.com"})
        model = client.post(
            "/model-versions",
            json={"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": tag},
        )
    user.raise_for_status()
    model.raise_for_status()
    return user.json()["id"], model.json()["id"]


def drop_queue_keys(queue_name: str) -> None:
    """This run's queue keys and the jobs still in them; other keys are left alone."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in client.scan_iter(match=f"{queue_name}*"):
                if client.type(key) == b"zset":
                    for job_id in client.zrange(key, 0, -1):  # type: ignore[union-attr]
                        pipe.delete(*(prefix + job_id for prefix in JOB_KEY_PREFIXES))
                pipe.delete(key)
            pipe.execute()
    finally:
        client.close()


def reset_state(bench: Bench) -> None:
    """Empty queue and tables, so nothing of one measurement is left for the next."""
    drop_queue_keys(bench.env["QUEUE_NAME"])
    asyncio.run(database.truncate_all(bench.db_url))


def measure(bench: Bench, label: str, request: Request, level: int, total: int) -> list[str]:
    cpu = Cpu([[bench.api.popen.pid]])
    result = asyncio.run(load(bench.base_url, request, total=total, concurrency=level))
    ok = len(result.latencies_ms)
    latencies = [pct(result.latencies_ms, q) for q in (50, 95, 99)]
    rate, odd = f"{ok / result.seconds:.0f}", tally(result.outcomes)
    bench.submit.append([label, str(level), str(ok), *latencies, rate, cpu.percent(), odd])
    return result.ids


def bench_submit(bench: Bench, total: int) -> None:
    """POST, then GET what was posted, at each concurrency level; no worker runs."""
    user_id, model_id = new_user_and_model(bench.base_url)
    warm = submitter(user_id, model_id, "warm-up")
    asyncio.run(load(bench.base_url, warm, total=min(100, total), concurrency=8))
    ids: list[str] = []
    for level in LEVELS:
        post = submitter(user_id, model_id, f"c{level}")
        ids += measure(bench, "POST /conversations", post, level, total)
    for level in LEVELS:
        measure(bench, "GET /conversations/{id}", poller(ids), level, total)
    reset_state(bench)


def unfinished(client: httpx.Client, user_id: str) -> int:
    total = 0
    for status in ("pending", "running"):
        params = {"user_id": user_id, "status": status, "limit": "1"}
        total += int(client.get("/conversations", params=params).headers["X-Total-Count"])
    return total


def wait_drained(base_url: str, user_id: str) -> tuple[int, list[dict[str, Any]]]:
    """Wait (bounded) until no conversation of the user is unfinished; then read them all."""
    deadline = time.monotonic() + DRAIN_SECONDS
    rows: list[dict[str, Any]] = []
    with httpx.Client(
        base_url=base_url, timeout=30, trust_env=False, headers=ADMIN_HEADERS
    ) as client:
        while (left := unfinished(client, user_id)) and time.monotonic() < deadline:
            time.sleep(0.25)
        for offset in range(0, 100_000, 100):
            params = {"user_id": user_id, "limit": "100", "offset": str(offset)}
            page = client.get("/conversations", params=params).json()
            rows += page
            if len(page) < 100:
                break
    return left, rows


def pipeline_cells(burst: Load, rows: list[dict[str, Any]], left: int) -> Row:
    """completed, drain s, conv/s, queue wait p50/p95, e2e p50/p95, anything odd."""
    done = [r for r in rows if r["status"] == "completed"]
    when = datetime.fromisoformat
    finished = [when(r["completed_at"]) for r in done]
    start = min((when(r["created_at"]) for r in rows), default=None)
    drain = (max(finished) - start).total_seconds() if done and start else math.nan
    waits = [float(r["queue_wait_ms"]) for r in done if r["queue_wait_ms"] is not None]
    e2e = [(when(r["completed_at"]) - when(r["created_at"])).total_seconds() * 1000 for r in done]
    odd = burst.outcomes + Counter(r["status"] for r in rows if r["status"] != "completed")
    odd["unfinished at the time limit"] = left
    counts = [f"{len(done)}/{len(burst.ids)}", f"{drain:.1f}", f"{len(done) / drain:.1f}"]
    return [*counts, *(pct(v, q) for v in (waits, e2e) for q in (50, 95)), tally(+odd)]


def bench_scenario(bench: Bench, scenario: Scenario, total: int, log_dir: Path) -> None:
    """Submit a burst of `total` to idle, ready workers and wait until all are finished."""
    bench.llm.reset()
    bench.llm.configure(delay_seconds=scenario.delay_ms / 1000)
    env = {**bench.env, "WORKER_MAX_JOBS": str(scenario.max_jobs)}
    workers = [start_worker(env, log_dir) for _ in range(scenario.workers)]
    idle = [rss_mb(worker) for worker in workers]
    try:
        user_id, model_id = new_user_and_model(bench.base_url)
        cpu = Cpu([[w.popen.pid for w in workers], [bench.api.popen.pid]])
        post = submitter(user_id, model_id, "pipeline")
        burst = asyncio.run(load(bench.base_url, post, total=total, concurrency=BURST_CONCURRENCY))
        left, rows = wait_drained(bench.base_url, user_id)
        used, after = cpu.percent(), [rss_mb(worker) for worker in workers]
        calls = bench.llm.stats().generation_calls
    finally:
        for worker in workers:
            worker.stop()
    name = f"{scenario.delay_ms} ms", str(scenario.workers), str(scenario.max_jobs)
    *cells, odd = pipeline_cells(burst, rows, left)
    bench.pipeline.append([*name, *cells, str(calls), used, odd])
    label = f"{scenario.workers} worker(s) ({scenario.delay_ms} ms, max_jobs {scenario.max_jobs})"
    bench.memory.append([label, " / ".join(idle), " / ".join(after)])
    reset_state(bench)


def stack_env(db_url: URL, queue_name: str, llm_url: str) -> dict[str, str]:
    """The project defaults (.env.example), with loopback-only metrics and no port clash."""
    return {
        "DATABASE_URL": db_url.render_as_string(hide_password=False),
        "REDIS_URL": REDIS_URL,
        "QUEUE_NAME": queue_name,
        "OLLAMA_BASE_URL": llm_url,
        "WORKER_METRICS_HOST": "127.0.0.1",
        "WORKER_METRICS_PORT": "0",
        "LOG_FORMAT": "JSON",
        "LOG_LEVEL": "INFO",
        "ENVIRONMENT": "DEV",
        "ADMIN_API_KEY": ADMIN_KEY,
        # The benchmark measures the service, not its per-user limits.
        "SUBMIT_RATE_LIMIT": "off",
        "MAX_ACTIVE_CONVERSATIONS_PER_USER": "0",
        "QUEUE_MAX_DEPTH": "0",
    }


def log_problems(log_dir: Path) -> Counter[str]:
    """Warnings, errors and tracebacks the API and workers logged, by process and event."""
    seen: Counter[str] = Counter()
    for path in sorted(log_dir.glob("*.log")):
        process = path.name.split("-")[0]
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    seen[f"{process}: traceback (non-JSON output)"] += 1
                continue
            if record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                seen[f"{process}: {record['level']} {record.get('message')}"] += 1
    return +seen


def shell(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip("\n")


def machine(background: float) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":")[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    client = redis.Redis.from_url(REDIS_URL)
    redis_version = client.info("server")["redis_version"]  # type: ignore[index]
    client.close()
    admin = database.admin_url().set(drivername="postgresql")
    postgres = shell(
        "psql", admin.render_as_string(hide_password=False), "-tAc", "SHOW server_version"
    )
    return (
        f"- CPU: {shell('nproc')} cores (`nproc`), {model}; busy {background:.0f}% "
        "(of 200) in the 3 s before the run, from other processes\n"
        f"- Python {sys.version.split()[0]}, PostgreSQL {postgres or '?'}, "
        f"Redis {redis_version}; all on this machine, with the load generator\n"
        f"- Memory (`free -h`):\n\n```\n{shell('free', '-h')}\n```"
    )


def table(headers: list[str], rows: list[Row]) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in lines)


def kept_reading() -> str:
    if DOC.exists() and READING in (text := DOC.read_text()):
        return text.split(READING, 1)[1].split("\n## ", 1)[0].strip()
    return "- (to be written by hand after reading the tables)"


SUBMIT = ["request", "concurrency", "ok", "p50 ms", "p95 ms", "p99 ms", "req/s"]
SUBMIT += ["CPU % API / client / machine", "other outcomes"]
PIPELINE = ["LLM delay", "workers", "max_jobs", "completed", "drain s", "conv/s", "wait p50 ms"]
PIPELINE += ["wait p95 ms", "e2e p50 ms", "e2e p95 ms", "LLM calls"]
PIPELINE += ["CPU % workers / API / client / machine", "other outcomes"]
INTRO = """Measured by `scripts/bench.py`. API and workers run with the project defaults \
(`.env.example`: WORKER_POLL_DELAY_SECONDS 0.5, DB pool 10+10, LOG_LEVEL INFO, JSON logs). \
The LLM is the stand-in server (`tests/support/fake_llm.py`) in its own process, answering \
after a fixed delay: it is not a model. Latencies are measured by the client; CPU is in % of \
one core (the machine has 200), "client" is the load generator, "machine" everything."""


def report(bench: Bench, command: str, background: float, problems: Counter[str]) -> str:
    logged = "\n".join(f"- {k}: {v}" for k, v in sorted(problems.items())) or "- none"
    return "\n\n".join(
        [
            f"# Benchmarks\n\n{INTRO}",
            f"## Machine\n\n{machine(background)}",
            f"## Run\n\n- Command: `{command}`\n- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "## Submit path, no worker running\n\nAPI + PostgreSQL + Redis only; the jobs it "
            "queues are thrown away afterwards.\n\n" + table(SUBMIT, bench.submit),
            f"## Pipeline\n\nA burst submitted at concurrency {BURST_CONCURRENCY} to idle, "
            "ready workers. drain = first `created_at` to last `completed_at`; wait = "
            "`queue_wait_ms`; e2e = `completed_at - created_at`.\n\n"
            + table(PIPELINE, bench.pipeline),
            "## Memory (RSS, MB)\n\n"
            + table(["process", "idle at start", "after the load"], bench.memory),
            f"## Warnings and errors logged\n\n{logged}",
            f"{READING}\n\n{kept_reading()}\n",
        ]
    )


def wait_for_quiet() -> float:
    """Give other work on the machine up to QUIET_WAIT_SECONDS to calm down; the last reading."""
    deadline = time.monotonic() + QUIET_WAIT_SECONDS
    while True:
        before = machine_busy_seconds()
        time.sleep(3)
        busy = (machine_busy_seconds() - before) / 3 * 100
        if busy < QUIET_PERCENT or time.monotonic() > deadline:
            return busy


def run(args: argparse.Namespace, db_url: URL, queue_name: str, log_dir: Path) -> str:
    requests, conversations = (200, 100) if args.quick else (2000, 500)
    background = wait_for_quiet()
    with FakeLLMProcess() as llm:
        env = stack_env(db_url, queue_name, llm.url)
        api, base_url = start_api(env, log_dir)
        bench = Bench(api=api, base_url=base_url, env=env, llm=llm, db_url=db_url)
        api_rss = [rss_mb(api)]
        try:
            bench_submit(bench, requests)
            api_rss.append(rss_mb(api))
            for scenario in SCENARIOS:
                bench_scenario(bench, scenario, conversations, log_dir)
            api_rss.append(rss_mb(api))
        finally:
            api.stop()
    after = f"{api_rss[1]} after the submit load, {api_rss[2]} after all pipeline runs"
    bench.memory.insert(0, ["API (one uvicorn process)", api_rss[0], after])
    command = ".venv/bin/python -m scripts.bench" + (" --quick" if args.quick else "")
    return report(bench, command, background, log_problems(log_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests, a quick check")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    name, queue_name = f"ai_eng_bench_{run_id}", f"ai-eng-api-bench:{run_id}:queue"
    db_url = database.create_database(name)
    try:
        database.migrate(db_url)
        with tempfile.TemporaryDirectory(prefix="bench-") as log_dir:
            text = run(args, db_url, queue_name, Path(log_dir))
    finally:
        drop_queue_keys(queue_name)
        database.drop_database(name)
    DOC.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
