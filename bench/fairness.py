"""`python -m bench.fairness`: fair scheduling and priorities, through the real processes.

The API and `--workers` workers (`WORKER_MAX_JOBS=--max-jobs`) in front of one stand-in model
server that answers after `--latency` seconds and takes `--capacity` requests at once
(`LLM_SERVER_CAPACITY`): a fixed total capacity of capacity / latency conversations a second.
Three scenarios, each on an empty queue:

* **flood vs. a light user**: user A submits `--flood` conversations at once; then user B
  submits `--light`, one every `--interval` seconds. Reported: how long each of B's waited
  from its submit to its start (`queue_wait_ms`, p50 / p95 / max, against 2 x latency), and
  A's completions per second from B's first submit to B's last completion, against the
  capacity. In first-in-first-out order B's first conversation would wait flood / capacity.
* **batch flood vs. interactive**: the same, with A's flood `batch` and A's own later
  submissions `interactive`: interactive work overtakes A's batch work.
* **two floods**: A submits `--flood` / 2, then B as many: from B's first start on, the
  completions each has while both have work queued (each should get half); then again with
  B's `queue_weight` at 3 (B should get three quarters).

Every number comes from the rows (PostgreSQL's clock for both ends) and the stand-in's own
count of its most concurrent requests. `--output FILE` replaces the section
"## Fair scheduling and priorities" of FILE (docs/benchmarks.md) with the report.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.load import percentile
from bench.stack import (
    REDIS_URL,
    Run,
    query,
    start_server,
    start_workers,
    stop_all,
    wait_for_quiet,
)
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm_process import FakeLLMProcess
from tests.support.processes import Process, wait_until

HEADING = "## Fair scheduling and priorities"


@dataclass(frozen=True)
class Options:
    latency: float
    capacity: int
    workers: int
    max_jobs: int
    flood: int
    light: int
    interval: float


@dataclass
class Scenario:
    name: str
    waits_ms: list[float]  # the light submissions' submit -> start
    flood_rate: float  # the flooding flow's completions per second in the window
    window_s: float
    flood_left: int  # the flood's conversations still unfinished when the window ended
    shares: dict[str, int] | None = None  # two floods: completions per user in the window


async def _submit(
    client: httpx.AsyncClient, user: str, model: str, count: int, priority: str
) -> list[str]:
    semaphore = asyncio.Semaphore(32)

    async def one(n: int) -> str:
        async with semaphore:
            body = {"user_id": user, "model_version_id": model, "prompt": f"p{n}"}
            response = await client.post("/conversations", json={**body, "priority": priority})
            response.raise_for_status()
            return str(response.json()["id"])

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _trickle(
    client: httpx.AsyncClient, user: str, model: str, count: int, interval: float, priority: str
) -> list[str]:
    ids: list[str] = []
    for n in range(count):
        ids += await _submit(client, user, model, 1, priority)
        if n + 1 < count:
            await asyncio.sleep(interval)
    return ids


def _all_finished(run: Run, ids: list[str]) -> bool:
    rows = query(
        run.db_url,
        "SELECT count(*) AS n FROM conversation WHERE id = ANY($1::uuid[]) "
        "AND status IN ('completed', 'failed', 'cancelled')",
        ids,
    )
    return int(rows[0]["n"]) == len(ids)


def _window(run: Run, ids: list[str]) -> tuple[datetime, datetime]:
    rows = query(
        run.db_url,
        "SELECT min(created_at) AS t0, max(completed_at) AS t1 FROM conversation "
        "WHERE id = ANY($1::uuid[])",
        ids,
    )
    return rows[0]["t0"], rows[0]["t1"]


def _completed_between(run: Run, user: str, t0: datetime, t1: datetime) -> int:
    rows = query(
        run.db_url,
        "SELECT count(*) AS n FROM conversation WHERE user_id = $1::uuid "
        "AND status = 'completed' AND completed_at > $2 AND completed_at <= $3",
        user,
        t0,
        t1,
    )
    return int(rows[0]["n"])


def _unfinished(run: Run, user: str) -> int:
    rows = query(
        run.db_url,
        "SELECT count(*) AS n FROM conversation WHERE user_id = $1::uuid "
        "AND status IN ('pending', 'running')",
        user,
    )
    return int(rows[0]["n"])


def _waits(run: Run, ids: list[str]) -> list[float]:
    rows = query(
        run.db_url,
        "SELECT queue_wait_ms FROM conversation WHERE id = ANY($1::uuid[])",
        ids,
    )
    return sorted(float(r["queue_wait_ms"]) for r in rows)


class Bench:
    def __init__(self, opts: Options, run: Run, llm: FakeLLMProcess, api: Process) -> None:
        self.opts, self.run, self.llm, self.api = opts, run, llm, api
        self.env = api.env
        self.workers: list[Process] = []

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_all(self.workers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.env["BASE_URL"], headers=ADMIN_HEADERS, timeout=30, trust_env=False
        )

    def fresh(self) -> None:
        """An empty queue and fresh workers: no scenario inherits another's work."""
        stop_all(self.workers)
        self.workers = []
        self.run.clear_conversations(REDIS_URL)
        self.llm.reset()
        self.llm.configure(delay_seconds=self.opts.latency)
        self.workers = start_workers(self.opts.workers, self.env, self.run.workdir)

    def users(self) -> tuple[str, str, str]:
        return asyncio.run(self._users())

    async def _users(self) -> tuple[str, str, str]:
        async with self.client() as c:
            ids = []
            for name in ("a", "b"):
                made = await c.post("/users", json={"email": f"{name}-{uuid.uuid4().hex}@x.io"})
                made.raise_for_status()
                ids.append(made.json()["id"])
            model = await c.post(
                "/model-versions",
                json={"provider": "ollama", "model_name": "m", "version_tag": uuid.uuid4().hex},
            )
            model.raise_for_status()
        return ids[0], ids[1], model.json()["id"]

    async def _flood_then_trickle(
        self, flood_user: str, light_user: str, model: str, flood_priority: str
    ) -> list[str]:
        opts = self.opts
        async with self.client() as c:
            await _submit(c, flood_user, model, opts.flood, flood_priority)
            return await _trickle(c, light_user, model, opts.light, opts.interval, "interactive")

    def light_vs_flood(
        self, name: str, flood_user: str, light_user: str, model: str, flood_priority: str
    ) -> Scenario:
        self.fresh()
        light = asyncio.run(self._flood_then_trickle(flood_user, light_user, model, flood_priority))
        wait_until(lambda: _all_finished(self.run, light), timeout=600, interval=0.5, what=name)
        t0, t1 = _window(self.run, light)
        window = (t1 - t0).total_seconds()
        # The light user's own completions are not the flood's: count by flow where they differ.
        flood_done = _completed_between(self.run, flood_user, t0, t1)
        if flood_user == light_user:
            flood_done -= len(light)
        return Scenario(
            name=name,
            waits_ms=_waits(self.run, light),
            flood_rate=flood_done / window,
            window_s=window,
            flood_left=_unfinished(self.run, flood_user),
        )

    async def _two_floods(self, a: str, b: str, model: str, b_weight: int) -> list[str]:
        half = self.opts.flood // 2
        async with self.client() as c:
            weighed = await c.patch(f"/users/{b}", json={"queue_weight": b_weight})
            weighed.raise_for_status()
            await _submit(c, a, model, half, "interactive")
            return await _submit(c, b, model, half, "interactive")

    def two_floods(self, a: str, b: str, model: str, b_weight: int = 1) -> Scenario:
        self.fresh()
        b_ids = asyncio.run(self._two_floods(a, b, model, b_weight))

        def first_b_start() -> datetime | None:
            rows = query(
                self.run.db_url,
                "SELECT min(started_at) AS t FROM conversation WHERE id = ANY($1::uuid[])",
                b_ids,
            )
            started: datetime | None = rows[0]["t"]
            return started

        wait_until(lambda: first_b_start() is not None, timeout=600, what="B's first start")
        t0 = first_b_start()
        assert t0 is not None
        time.sleep(20)
        t1 = query(self.run.db_url, "SELECT now() AS t")[0]["t"]
        shares = {
            "A": _completed_between(self.run, a, t0, t1),
            "B": _completed_between(self.run, b, t0, t1),
        }
        window = (t1 - t0).total_seconds()
        return Scenario(
            name=f"two floods, B of weight {b_weight}",
            waits_ms=[],
            flood_rate=sum(shares.values()) / window,
            window_s=window,
            flood_left=_unfinished(self.run, a) + _unfinished(self.run, b),
            shares=shares,
        )


def _row(s: Scenario, opts: Options) -> str:
    capacity = opts.capacity / opts.latency
    waits = s.waits_ms
    p50, p95 = percentile(waits, 50), percentile(waits, 95)
    bound = 2 * opts.latency * 1000
    total = s.flood_rate + len(waits) / s.window_s  # the light user's are in the window too
    return (
        f"| {s.name} | {len(waits)} | {p50:,.0f} / {p95:,.0f} / {max(waits):,.0f} "
        f"| {'met' if p95 <= bound else '**missed**'} ({p95 / bound:.2f} of {bound:,.0f}) "
        f"| {s.flood_rate:.2f} / {capacity:.2f} ({s.flood_rate / capacity:.0%}) "
        f"| {total:.2f} ({total / capacity:.0%}) "
        f"| {s.window_s:.1f} | {s.flood_left:,} |"
    )


def render(opts: Options, scenarios: list[Scenario], max_in_flight: int, took: float) -> str:
    capacity = opts.capacity / opts.latency
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        HEADING,
        "",
        f"Measured by `python -m bench.fairness --output docs/benchmarks.md` "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, took {took:.0f} s, code `{commit[:80]}`), "
        f"on the machine above ({platform.machine()}): the API and {opts.workers} workers "
        f"(`WORKER_MAX_JOBS={opts.max_jobs}`) as their own processes, one stand-in model "
        f"server answering after {opts.latency:g} s with `LLM_SERVER_CAPACITY={opts.capacity}`: "
        f"a capacity of {capacity:.1f} conversations/s. The flood is {opts.flood:,} "
        f"conversations submitted at once; the light user then submits {opts.light}, one "
        f"every {opts.interval:g} s. Waits are `queue_wait_ms` (submit → start) from the rows; "
        f"the flood's rate counts its completions from the light user's first submit to its "
        f"last completion. In first-in-first-out order the light user's first conversation "
        f"would have waited {opts.flood / capacity:,.0f} s.",
        "",
        "| scenario | light submissions | wait p50 / p95 / max (ms) | target p95 ≤ 2 x latency "
        "| flood conv/s / capacity | both users conv/s | window (s) | flood left unfinished |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(s, opts) for s in scenarios if s.shares is None]
    for s in scenarios:
        if s.shares is not None:
            total = sum(s.shares.values()) or 1
            lines += [
                "",
                f"Two floods of {opts.flood // 2:,} each, B's (of `queue_weight` "
                f"{s.name.rsplit(' ', 1)[1]}) submitted after A's: over "
                f"{s.window_s:.1f} s from B's first start, A completed {s.shares['A']} "
                f"({s.shares['A'] / total:.0%}) and B {s.shares['B']} "
                f"({s.shares['B'] / total:.0%}); together {s.flood_rate:.2f}/s of "
                f"{capacity:.2f}/s.",
            ]
    lines += [
        "",
        f"The stand-in's most concurrent requests in the whole run: {max_in_flight} "
        f"(capacity {opts.capacity}).",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the section under HEADING (up to the next `## `), or append it."""
    text = path.read_text() if path.exists() else ""
    start = text.find(HEADING)
    if start < 0:
        path.write_text(text.rstrip() + "\n\n" + section + "\n")
        return
    end = text.find("\n## ", start + len(HEADING))
    rest = "" if end < 0 else text[end:]
    path.write_text(text[:start] + section + "\n" + rest)


def run_all(opts: Options, output: Path | None) -> str:
    began = time.perf_counter()
    wait_for_quiet()
    run = Run(uuid.uuid4().hex[:8], Path(tempfile.mkdtemp(prefix="bench-fair-")))
    run.create_database()
    try:
        with FakeLLMProcess(config={"delay_seconds": opts.latency}) as llm:
            env = run.env(
                llm.url,
                LLM_SERVER_CAPACITY=str(opts.capacity),
                WORKER_MAX_JOBS=str(opts.max_jobs),
                LLM_TIMEOUT_SECONDS="120",
            )
            api = start_server("api", "api.main:create_app", env, run.workdir)
            try:
                with Bench(opts, run, llm, api) as bench:
                    a, b, model = bench.users()
                    scenarios = [
                        bench.light_vs_flood("flood vs. a light user", a, b, model, "interactive"),
                        bench.light_vs_flood("batch flood vs. interactive", a, a, model, "batch"),
                        bench.two_floods(a, b, model),
                        bench.two_floods(a, b, model, b_weight=3),
                    ]
                    max_in_flight = llm.stats().max_in_flight
            finally:
                stop_all([api])
        report = render(opts, scenarios, max_in_flight, time.perf_counter() - began)
        if output is not None:
            write_section(output, report)
        shutil.rmtree(run.workdir, ignore_errors=True)
        return report
    finally:
        run.clear_conversations(REDIS_URL)
        run.drop_database()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-jobs", type=int, default=50)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--light", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.5)
    parser.add_argument("--output", type=Path, default=None)
    args: Any = parser.parse_args(argv)
    opts = Options(
        latency=args.latency,
        capacity=args.capacity,
        workers=args.workers,
        max_jobs=args.max_jobs,
        flood=args.flood,
        light=args.light,
        interval=args.interval,
    )
    print(run_all(opts, args.output))


if __name__ == "__main__":
    main()
