"""Soak: a thousand conversations through real processes while faults are injected.

    .venv/bin/python -m scripts.soak [--conversations 1000] [--workers 3] [--rate 12]

Not a test; run it by hand (a few minutes). It starts, and removes at the end, all it needs:
a throwaway PostgreSQL database, a throwaway `redis-server` on a free port, the stand-in LLM,
the API and N workers. While it submits, it keeps breaking things in turn: SIGKILL a worker
(and start a new one), SIGTERM a worker, restart Redis empty, cut the database connections,
make the LLM answer 503/500 or hang up mid-answer for a while. Then it waits (bounded) for
every accepted conversation to settle and prints what happened to them.

Exit status 1 when a conversation was lost (still pending or running, missing, or failed
without a reason) or generated more often than it was claimed, hand-backs aside.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.settings import Settings
from tests.support import database
from tests.support.auth import ADMIN_HEADERS
from tests.support.fake_llm import FakeLLMServer
from tests.support.processes import Process, start_api, start_worker
from tests.support.redis_server import RedisServer
from tests.support.stack import stack_env
from tests.support.stack_database import SETTLED, Database

# More attempts and slower retries than the tests: a few seconds of 503 should not fail much.
SOAK_ENV = {
    "OLLAMA_TIMEOUT_SECONDS": "4",
    # Short enough that a worker stopped during a slow answer hands it back.
    "WORKER_SHUTDOWN_GRACE_SECONDS": "1",
    "WORKER_MAX_ATTEMPTS": "5",
    "WORKER_RETRY_BASE_SECONDS": "1",
    "WORKER_RETRY_MAX_SECONDS": "4",
    "LOG_LEVEL": "INFO",
}


@dataclass
class Soak:
    env: dict[str, str]
    workdir: Path
    redis: RedisServer
    db: Database
    llm: FakeLLMServer
    rng: random.Random
    api: Process | None = None
    base_url: str = ""
    workers: list[Process] = field(default_factory=list)
    retired: list[Process] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)

    # --- faults -------------------------------------------------------------------------
    def _replace_worker(self, how: Callable[[Process], object]) -> None:
        victim = self.workers.pop(self.rng.randrange(len(self.workers)))
        how(victim)
        self.retired.append(victim)
        self.workers.append(start_worker(self.env, self.workdir))

    def kill_worker(self) -> None:
        self._replace_worker(Process.kill)

    def terminate_worker(self) -> None:
        self._replace_worker(Process.stop)

    def terminate_worker_mid_slow_answers(self) -> None:
        normal = self.llm.state.behaviour.delay_seconds
        self.llm.configure(delay_seconds=2.5)
        time.sleep(1)
        self._replace_worker(Process.stop)
        self.llm.configure(delay_seconds=normal)

    def restart_redis_empty(self) -> None:
        self.redis.restart_empty()

    def cut_database(self) -> None:
        self.db.terminate_backends()

    def llm_503_for_a_while(self) -> None:
        self.llm.configure(mode="status", status=503)
        time.sleep(3)
        self.llm.configure(mode="ok")

    def llm_fails_20_then_recovers(self) -> None:
        self.llm.configure(mode="fail_n_then_ok", fail_n=20, status=500)

    def llm_hangs_up_for_a_while(self) -> None:
        self.llm.configure(mode="close_mid_stream")
        time.sleep(1)
        self.llm.configure(mode="ok")

    def inject(self, name: str) -> None:
        began = time.monotonic()
        getattr(self, name)()
        self.faults[name] += 1
        print(f"  fault {name} ({time.monotonic() - began:.1f}s)", flush=True)

    def stop(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            process.stop()
        self.redis.kill()

    def log_events(self, message: str) -> list[dict[str, Any]]:
        """The JSON log records of every worker, past and present, with this message."""
        events = []
        for process in [*self.workers, *self.retired]:
            for line in process.log().splitlines():
                if f'"message": "{message}"' in line:
                    events.append(json.loads(line))
        return events


FAULTS = [
    "kill_worker",
    "restart_redis_empty",
    "llm_503_for_a_while",
    "cut_database",
    "terminate_worker",
    "llm_fails_20_then_recovers",
    "kill_worker",
    "llm_hangs_up_for_a_while",
    "terminate_worker_mid_slow_answers",
]


def submit_all(soak: Soak, user_id: str, model_id: str, count: int, rate: float) -> list[str]:
    """Submit `count` conversations at about `rate` per second; the ids of the accepted."""
    accepted: list[str] = []
    errors: Counter[str] = Counter()
    began = time.monotonic()
    with httpx.Client(base_url=soak.base_url, timeout=15, headers=ADMIN_HEADERS) as client:
        for i in range(count):
            time.sleep(max(0.0, began + i / rate - time.monotonic()))
            body = {"user_id": user_id, "model_version_id": model_id, "prompt": f"soak {i}"}
            try:
                response = client.post("/conversations", json=body)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            else:
                errors[str(response.status_code)] += 1
    if errors:
        print(f"  submissions refused: {dict(errors)}", flush=True)
    return accepted


def settle(db: Database, ids: list[str], timeout: float) -> dict[str, str]:
    """Wait until every accepted conversation is finished, or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        rows = db.rows(ids)
        open_rows = [r for r in rows.values() if r.status not in SETTLED]
        if (not open_rows and len(rows) == len(ids)) or time.monotonic() > deadline:
            return {cid: row.status for cid, row in rows.items()}
        print(f"  waiting: {len(open_rows)} unfinished", flush=True)
        time.sleep(3)


def report(
    soak: Soak, ids: list[str], unheard: list[str], submitted: int, timings: dict[str, float]
) -> bool:
    """Print the outcome of `ids` (accepted) and `unheard` (rows behind a refused submit)."""
    ids = [*ids, *unheard]
    rows = soak.db.rows(ids)
    by_status = Counter(r.status for r in rows.values())
    failed = Counter(r.error_code or "(no code)" for r in rows.values() if r.status == "failed")
    unexplained = sum(1 for r in rows.values() if r.status == "failed" and not r.error_message)
    missing = len(ids) - len(rows)
    unfinished = sum(n for status, n in by_status.items() if status not in SETTLED)
    lost = missing + unfinished + unexplained
    stats = soak.llm.stats()
    extra = {
        r.prompt: stats.calls_for(r.prompt) - r.attempts
        for r in rows.values()
        if stats.calls_for(r.prompt) > r.attempts
    }
    handed_back = len(soak.log_events("generation_handed_back"))
    reclaimed = sum(e["extra"]["reclaimed"] for e in soak.log_events("sweep_done"))
    requeued = sum(e["extra"]["requeued"] for e in soak.log_events("sweep_done"))
    avoidable = max(sum(extra.values()) - handed_back, 0)
    retried = Counter(min(r.attempts, 5) for r in rows.values())
    print("\n=== soak result ===")
    print(f"submitted:  {submitted}")
    print(f"accepted:   {len(ids) - len(unheard)}")
    print(f"refused, yet committed (a 503 after the commit landed): {len(unheard)}")
    print(f"completed:  {by_status['completed']}")
    print(f"failed:     {by_status['failed']} {dict(failed.most_common())}")
    print(
        f"lost:       {lost} (pending {by_status['pending']}, running {by_status['running']},"
        f" missing {missing}, failed without reason {unexplained})"
    )
    print(f"attempts per conversation: {dict(sorted(retried.items()))}")
    print(f"generation calls: {stats.generation_calls}")
    print(
        f"duplicate generations (calls beyond claimed attempts): {sum(extra.values())}"
        f" in {len(extra)} conversations; SIGTERM hand-backs logged: {handed_back};"
        f" unexplained: {avoidable}"
    )
    print(f"sweeper: {reclaimed} expired leases taken back, {requeued} jobs enqueued again")
    print(f"faults injected: {dict(soak.faults)}")
    print(", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items()))
    print(f"logs: {soak.workdir}")
    return lost == 0 and avoidable == 0


def run(args: argparse.Namespace) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    name = database.new_database_name()
    db_url = database.create_database(name)
    llm = FakeLLMServer().start()
    llm.configure(mode="ok", delay_seconds=args.llm_delay)
    redis_server = RedisServer(workdir).start()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        DATABASE_URL=db_url.render_as_string(hide_password=False),
        REDIS_URL=redis_server.url,
        QUEUE_NAME=f"soak:{name}",
    )
    env = stack_env(settings, llm.url, workdir, **SOAK_ENV)
    soak = Soak(
        env=env,
        workdir=workdir,
        redis=redis_server,
        db=Database(db_url),
        llm=llm,
        rng=random.Random(args.seed),
    )
    try:
        database.migrate(db_url)
        soak.api, soak.base_url = start_api(env, workdir)
        soak.workers = [start_worker(env, workdir) for _ in range(args.workers)]
        with httpx.Client(base_url=soak.base_url, timeout=15, headers=ADMIN_HEADERS) as client:
            user = client.post("/users", json={"email": "soak@example.com"}).json()
            model = client.post(
                "/model-versions",
                json={"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": "soak"},
            ).json()
        print(f"stack up: api {soak.base_url}, {args.workers} workers, logs in {workdir}")
        began = time.monotonic()
        accepted: list[str] = []
        submitter = threading.Thread(
            target=lambda: accepted.extend(
                submit_all(soak, user["id"], model["id"], args.conversations, args.rate)
            )
        )
        submitter.start()
        turn = 0
        while submitter.is_alive():
            submitter.join(timeout=args.fault_every)
            soak.inject(FAULTS[turn % len(FAULTS)])
            turn += 1
        submitted_in = time.monotonic() - began
        print(f"submitted {args.conversations} in {submitted_in:.0f}s; settling", flush=True)
        # A refused submit whose commit had landed left a row its client never heard of:
        # that one must settle too.
        unheard = sorted(set(soak.db.ids_of_user(user["id"])) - set(accepted))
        settle(soak.db, [*accepted, *unheard], timeout=args.timeout)
        timings = {"submit": submitted_in, "total": time.monotonic() - began}
        return report(soak, accepted, unheard, args.conversations, timings)
    finally:
        soak.stop()
        llm.stop()
        database.drop_database(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=12.0, help="submissions per second")
    parser.add_argument("--fault-every", type=float, default=6.0, help="seconds between faults")
    parser.add_argument("--timeout", type=float, default=600.0, help="max seconds to settle")
    parser.add_argument("--llm-delay", type=float, default=0.5, help="seconds per answer")
    parser.add_argument("--seed", type=int, default=1)
    return 0 if run(parser.parse_args()) else 1


if __name__ == "__main__":
    sys.exit(main())
