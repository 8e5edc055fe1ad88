"""`python -m bench [--quick]`: the API and the worker beside a floor app, in one run.

Starts, and removes at the end, all it needs: a throwaway PostgreSQL database, its own queue
name on the local Redis (and, for the idle measurement, a private redis-server), the stand-in
LLM, the API and the floor app (one uvicorn process each), and workers. All on loopback;
every load is bounded by a count and a time limit. A full run writes docs/benchmarks.md
(keeping its hand-written "Reading the numbers"); `--quick` is a smoke run that prints the
report and writes nothing unless given `--output`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from bench import load
from bench import profile as profiling
from bench.load import (
    LoadResult,
    Target,
    generator_name,
    percentile,
    run_load,
)
from bench.report import (
    GET,
    POST,
    READY_CALLS,
    HttpRow,
    Idle,
    Pickup,
    Readiness,
    Results,
    Throughput,
    X,
    http_section,
    profiles_section,
    ratio_to_floor,
    render,
    throughput_section,
)
from bench.stack import (
    REDIS_URL,
    ROOT,
    CpuWindow,
    OtherLoad,
    Run,
    Tenant,
    create_tenant,
    memory_mb,
    query,
    redis_info,
    server_flags,
    start_server,
    start_workers,
    stop_all,
    wait_for_quiet,
    zset_members,
)
from bench.submit import submit_at_rate, submit_count
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.fake_llm_process import FakeLLMProcess
from tests.support.processes import Process, wait_until
from tests.support.redis_server import RedisServer

DOC = ROOT / "docs" / "benchmarks.md"
PICKUP_RATE = 50.0  # the target's
LIGHT_RATE = 5.0  # pickup without a backlog of CPU work
THROUGHPUT_MAX_JOBS = 100
DRAIN_LIMIT_SECONDS = 90.0
OTHER_LOAD_WARNING = 15.0  # % of a core
HttpRowParts = tuple[LoadResult, float, float]
_STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {text}", flush=True)


@dataclass(frozen=True)
class Plan:
    """How long and how much; `--quick` shrinks every part."""

    http_seconds: float  # each measured run at 32 connections
    single_seconds: float  # each run at 1 connection (0: none)
    warm_seconds: float  # per app and route, before the first measured run
    light_seconds: float  # at LIGHT_RATE
    pickup_seconds: float  # at PICKUP_RATE
    idle_seconds: float
    queued: int  # conversations per throughput run
    quiet_wait: float  # at most, for other work on the machine to calm down
    profile_seconds: float = 0  # per py-spy profile (0: none)


# 3,000 queued: with 100 slots a worker drains them in waves of 100, and the drain ends one
# model call after the last wave starts, so two workers can at most turn (n + 1) s into
# (n/2 + 1) s: 1.94x at 30 waves; 1,000 (10 waves) capped any pair at 1.83x, 300 at 1.6x.
FULL = Plan(10, 4, 2, 10, 20, 10, 3000, 60, profile_seconds=5)
QUICK = Plan(2, 0, 1, 2, 4, 4, 60, 10)


@dataclass
class Stack:
    run: Run
    llm: FakeLLMProcess
    env: dict[str, str]
    api: Process
    floor: Process
    tenant: Tenant

    @property
    def api_url(self) -> str:
        return self.api.env["BASE_URL"]

    def target(self, kind: str, *, app: str = "API", key: str = "admin", ids: str = "") -> Target:
        base = self.api_url if app == "API" else self.floor.env["BASE_URL"]
        secret = self.tenant.user_key if key == "user" else ADMIN_KEY
        t = self.tenant
        return Target(kind, base, secret, t.user_id, t.model_id, ids)


# --- request path ---------------------------------------------------------------------------


def measure(stack: Stack, target: Target, seconds: float, connections: int) -> HttpRowParts:
    server = stack.api if target.base_url == stack.api_url else stack.floor
    cpu = CpuWindow([server.popen.pid])
    result = run_load(target, seconds, connections=connections)
    use = cpu.stop()
    return result, use.seconds, use.machine_percent


def http_runs(stack: Stack, plan: Plan, results: Results, ids_file: Path) -> None:
    """POST, then GET of what was posted; floor, API (admin key), API (user key)."""
    for kind, route in (("post", POST), ("get", GET)):
        cases = [("floor", "none"), ("API", "admin"), ("API", "user")]
        for app, key in cases:
            run_load(stack.target(kind, app=app, key=key, ids=str(ids_file)), plan.warm_seconds)
        for connections, seconds in ((32, plan.http_seconds), (1, plan.single_seconds)):
            if not seconds:
                continue
            for app, key in cases if connections == 32 else cases[:2]:
                target = stack.target(kind, app=app, key=key, ids=str(ids_file))
                result, cpu_seconds, machine = measure(stack, target, seconds, connections)
                row = HttpRow(app, route, key, connections, result, cpu_seconds, machine)
                results.http.append(row)
                progress(
                    f"  {route} {app} {key} c{connections}: {row.load.rps:.0f} req/s, "
                    f"p50 {row.load.p50_ms:.1f} ms, p99 {row.load.p99_ms:.1f} ms, "
                    f"{row.cpu_ms_per_request:.2f} ms CPU/req, failed {row.load.failed}"
                )
        if kind == "post":
            rows = query(
                stack.run.db_url, "SELECT id FROM conversation ORDER BY random() LIMIT 2000"
            )
            ids_file.write_text("".join(f"{r['id']}\n" for r in rows))


def readiness(stack: Stack) -> Readiness:
    timings = []
    with httpx.Client(base_url=stack.api_url, headers=ADMIN_HEADERS, trust_env=False) as client:
        for _ in range(READY_CALLS):
            started = time.perf_counter()
            client.get("/health/ready").raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
    queued = len(zset_members(REDIS_URL, stack.run.queue_name))
    (row,) = query(
        stack.run.db_url, "SELECT count(*) AS n FROM conversation WHERE status = 'pending'"
    )
    return Readiness(statistics.median(timings), queued, int(row["n"]))


# --- workers --------------------------------------------------------------------------------


def unfinished(stack: Stack) -> int:
    (row,) = query(
        stack.run.db_url,
        "SELECT count(*) AS n FROM conversation WHERE status IN ('pending', 'running')",
    )
    return int(row["n"])


def wait_settled(stack: Stack, limit: float) -> None:
    deadline = time.monotonic() + limit
    while unfinished(stack) and time.monotonic() < deadline:
        time.sleep(0.1)


def statuses(stack: Stack) -> Counter[str]:
    rows = query(stack.run.db_url, "SELECT status, count(*) AS n FROM conversation GROUP BY 1")
    return Counter({r["status"]: int(r["n"]) for r in rows})


def pickup_runs(stack: Stack, plan: Plan) -> list[Pickup]:
    """One idle worker; submissions at a light rate first, then at PICKUP_RATE."""
    stack.llm.reset()
    workers = start_workers(1, stack.env, stack.run.workdir)
    found = []
    try:
        time.sleep(1.5)  # the start-up sweep is done
        for rate, seconds in ((LIGHT_RATE, plan.light_seconds), (PICKUP_RATE, plan.pickup_seconds)):
            tag = f"pickup-{rate:g}"
            cpu = CpuWindow([workers[0].popen.pid])
            count = round(rate * seconds)
            sent = submit_at_rate(stack.target("post"), rate=rate, count=count, tag=tag)
            wait_settled(stack, 30)
            use = cpu.stop()
            rows = query(
                stack.run.db_url,
                "SELECT status, extract(epoch FROM started_at - created_at) * 1000 AS ms,"
                " extract(epoch FROM completed_at - created_at) * 1000 AS done_ms"
                " FROM conversation WHERE prompt LIKE $1",
                f"{tag} %",
            )
            found.append(
                Pickup(
                    rate=rate,
                    achieved_rate=(count - 1) / sent.send_seconds if sent.send_seconds else 0,
                    submitted=count,
                    pickup_ms=sorted(float(r["ms"]) for r in rows if r["ms"] is not None),
                    completed_ms=sorted(
                        float(r["done_ms"]) for r in rows if r["done_ms"] is not None
                    ),
                    outcomes=sent.outcomes,
                    statuses=Counter(r["status"] for r in rows),
                    worker_cpu_seconds=use.seconds,
                    seconds=use.wall,
                )
            )
            time.sleep(0.5)
    finally:
        stop_all(workers)
    return found


def idle_run(stack: Stack, plan: Plan) -> Idle:
    private = RedisServer(stack.run.workdir)
    try:
        private.start()
        env = {**stack.env, "REDIS_URL": private.url}
        workers = start_workers(1, env, stack.run.workdir)
        client = redis.Redis.from_url(private.url)
        try:
            time.sleep(2)  # past the start-up (first sweep, first heartbeat)
            before = cast(dict[str, Any], client.info("commandstats"))
            cpu = CpuWindow([workers[0].popen.pid])
            time.sleep(plan.idle_seconds)
            after = cast(dict[str, Any], client.info("commandstats"))
            use = cpu.stop()
            rss, _ = memory_mb(workers[0].popen.pid)
        finally:
            client.close()
            stop_all(workers)
    finally:
        private.kill()
    calls: Counter[str] = Counter()
    for name, stats in after.items():
        delta = int(stats["calls"]) - int(before.get(name, {}).get("calls", 0))
        if delta:
            calls[name.removeprefix("cmdstat_")] = delta
    # The benchmark's own first INFO, on the same connection (the second is not in its reply).
    calls["info"] -= 1
    return Idle(seconds=use.wall, commands=+calls, cpu_percent=use.percent, rss_mb=rss)


def queued_jobs(stack: Stack) -> int:
    members = zset_members(REDIS_URL, stack.run.queue_name)
    return sum(1 for m in members if m.startswith(b"conversation:"))


def throughput_run(
    stack: Stack, plan: Plan, delay: float, count: int, *, profile: Path | None = None
) -> Throughput:
    """`count` workers drain `plan.queued` conversations; with `profile`, py-spy records the
    (first) worker meanwhile, and the numbers are not to be reported."""
    stack.run.clear_conversations()
    stack.llm.reset()
    stack.llm.configure(delay_seconds=delay)
    env = {**stack.env, "WORKER_MAX_JOBS": str(THROUGHPUT_MAX_JOBS)}
    workers = start_workers(count, env, stack.run.workdir)
    try:
        time.sleep(1.5)  # the start-up sweep is done
        for worker in workers:
            worker.signal(signal.SIGSTOP)
        sent = submit_count(stack.target("post"), count=plan.queued, tag="drain")
        wait_until(lambda: queued_jobs(stack) >= len(sent.ids), timeout=10, what="the jobs")
        cpu = CpuWindow([w.popen.pid for w in workers])
        released = datetime.now(UTC)
        for worker in workers:
            worker.signal(signal.SIGCONT)
        spy = (
            profiling.start(workers[0].popen.pid, plan.profile_seconds, profile)
            if profile
            else None
        )
        wait_settled(stack, DRAIN_LIMIT_SECONDS)
        use = cpu.stop()
        if spy is not None:
            spy.wait(timeout=plan.profile_seconds + 30)
        memory = [memory_mb(w.popen.pid) for w in workers]
        calls = stack.llm.stats().generation_calls
    finally:
        stop_all(workers)
    rows = query(
        stack.run.db_url,
        "SELECT status, created_at, started_at, completed_at FROM conversation",
    )
    done = [r for r in rows if r["status"] == "completed"]
    last = max((r["completed_at"] for r in done), default=None)
    first_created = min((r["created_at"] for r in rows), default=None)
    starts = sorted(
        (r["started_at"] - released).total_seconds() * 1000 for r in rows if r["started_at"]
    )
    return Throughput(
        delay_seconds=delay,
        workers=count,
        max_jobs=THROUGHPUT_MAX_JOBS,
        queued=len(sent.ids),
        statuses=Counter(r["status"] for r in rows),
        llm_calls=calls,
        drain_seconds=(last - released).total_seconds() if last else float("nan"),
        created_seconds=(last - first_created).total_seconds() if last and first_created else 0,
        first_start_ms=starts[0] if starts else float("nan"),
        wait_after_release_ms=starts,
        worker_cpu_seconds=use.seconds,
        worker_cpu_percent=use.percent,
        machine_percent=use.machine_percent,
        rss_mb=memory,
        outcomes=+Counter({k: v for k, v in sent.outcomes.items() if k != "HTTP 202"}),
    )


# --- the run --------------------------------------------------------------------------------


def log_problems(workdir: Path) -> Counter[str]:
    """Warnings, errors and tracebacks the processes logged, by process and event."""
    seen: Counter[str] = Counter()
    for path in sorted(workdir.glob("*.log")):
        process = path.name.split("-")[0]
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    seen[f"{process}: traceback (non-JSON output)"] += 1
                continue
            if isinstance(record, dict) and record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                seen[f"{process}: {record['level']} {record.get('message')}"] += 1
    return +seen


def versions(run: Run) -> dict[str, str]:
    (row,) = query(run.db_url, "SHOW server_version")
    redis_version = str(redis_info(REDIS_URL, "server")["redis_version"])
    return {
        "postgres": str(row["server_version"]),
        "redis": redis_version,
        "uvicorn": version("uvicorn"),
    }


def throughput_only(plan: Plan, results: Results, run: Run, delays: list[float]) -> None:
    """Only the worker throughput runs (and, with a profile, the worker's profile)."""
    with FakeLLMProcess() as llm:
        env = run.env(llm.url)
        api = start_server("api", "api.main:create_app", env, run.workdir)
        try:
            stack = Stack(run, llm, env, api, api, create_tenant(api.env["BASE_URL"]))
            worker_runs(stack, plan, results, delays)
        finally:
            stop_all([api])
    results.problems = log_problems(run.workdir)


def worker_runs(stack: Stack, plan: Plan, results: Results, delays: list[float]) -> None:
    run = stack.run
    for delay in delays:
        for workers in (1, 2):
            progress(f"throughput: {delay:g} s model, {workers} worker(s)")
            t = throughput_run(stack, plan, delay, workers)
            results.throughput.append(t)
            progress(f"  {t.rate:.1f} conv/s, {t.cpu_ms_per_job:.2f} ms CPU/job")
    if plan.profile_seconds:
        progress("profile of one worker draining, 1 s model (py-spy; not measured)")
        raw = run.workdir / "worker.raw"
        throughput_run(stack, plan, 1.0, 1, profile=raw)
        what = f"worker, 1 s model, WORKER_MAX_JOBS={THROUGHPUT_MAX_JOBS}, draining"
        results.profiles.append(profiling.summarise(what, raw))
    run.clear_conversations()


def api_profiles(stack: Stack, plan: Plan, results: Results) -> None:
    """py-spy profiles of the API under the POST and the GET load (nothing when the plan has
    no profile time); the raw samples stay in the run's directory."""
    if not plan.profile_seconds:
        return
    progress("profiles of the API under load (py-spy; not measured)")
    run = stack.run
    for kind, route in (("post", POST), ("get", GET)):
        raw = run.workdir / f"api-{kind}.raw"
        spy = profiling.start(stack.api.popen.pid, plan.profile_seconds, raw)
        run_load(stack.target(kind, ids=str(run.workdir / "ids.txt")), plan.profile_seconds)
        spy.wait(timeout=plan.profile_seconds + 30)
        what = f"API, {route}, admin key, 32 connections"
        results.profiles.append(profiling.summarise(what, raw))


def http_only(plan: Plan, results: Results, run: Run) -> None:
    """Only the request path beside the floor (and, with a profile, the API's profiles)."""
    with FakeLLMProcess() as llm:
        env = run.env(llm.url)
        processes: list[Process] = []
        try:
            api = start_server("api", "api.main:create_app", env, run.workdir)
            processes.append(api)
            floor = start_server("floor", "bench.floor_app:create_app", env, run.workdir)
            processes.append(floor)
            stack = Stack(run, llm, env, api, floor, create_tenant(api.env["BASE_URL"]))
            http_runs(stack, plan, results, run.workdir / "ids.txt")
            api_profiles(stack, plan, results)
        finally:
            stop_all(processes)
    results.problems = log_problems(run.workdir)


def execute(plan: Plan, results: Results, run: Run) -> dict[str, str]:
    with FakeLLMProcess() as llm:
        env = run.env(llm.url)
        processes: list[Process] = []
        try:
            progress("starting the API and the floor")
            api = start_server("api", "api.main:create_app", env, run.workdir)
            processes.append(api)
            floor = start_server("floor", "bench.floor_app:create_app", env, run.workdir)
            processes.append(floor)
            stack = Stack(run, llm, env, api, floor, create_tenant(api.env["BASE_URL"]))
            results.api_memory_idle = memory_mb(api.popen.pid)
            found = versions(run)
            progress("request path (no worker running)")
            results.readiness.append(readiness(stack))
            http_runs(stack, plan, results, run.workdir / "ids.txt")
            results.readiness.append(readiness(stack))
            results.api_memory = memory_mb(api.popen.pid)
            results.floor_memory = memory_mb(floor.popen.pid)
            api_profiles(stack, plan, results)
            run.clear_conversations()
            progress(f"pickup at {LIGHT_RATE:g}/s, then {PICKUP_RATE:g}/s, one idle worker")
            results.pickup = pickup_runs(stack, plan)
            for pickup in results.pickup:
                p50, p99 = percentile(pickup.pickup_ms, 50), percentile(pickup.pickup_ms, 99)
                progress(f"  {pickup.rate:g}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            run.clear_conversations()
            progress("idle worker, private Redis")
            idle = results.idle = idle_run(stack, plan)
            progress(f"  {idle.per_second:.1f} commands/s, {idle.cpu_percent:.2f} % of a core")
            worker_runs(stack, plan, results, [0.0, 1.0])
        finally:
            stop_all(processes)
    results.problems = log_problems(run.workdir)
    return found


def code_version() -> str:
    """The commit measured, and whether the service's code differs from it."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h %s")
    if not commit:
        return "not a git checkout"
    changed = git("status", "--porcelain", "--", "api", "shared", "worker", "migrations")
    return f"`{commit}`" + (", with uncommitted changes to the service" if changed else "")


def command(args: argparse.Namespace) -> str:
    flags = " --quick" * args.quick + (" --generator python" if args.generator == "python" else "")
    if args.profile is not None:
        flags += " --profile" if args.profile else " --no-profile"
    make = f"make bench BENCH_ARGS='{flags.strip()}'" if flags else "make bench"
    return f"`{make}` (runs `.venv/bin/python -m bench{flags}`)"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument(
        "--output", type=Path, help=f"where to write the report (default: {DOC} unless --quick)"
    )
    parser.add_argument(
        "--generator",
        choices=["auto", "python"],
        default="auto",
        help="auto: wrk where installed, else the Python generator; python: the latter anyway",
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        help="py-spy profiles of the API and a worker under load (default: on unless --quick)",
    )
    parser.add_argument(
        "--only",
        choices=["throughput", "http"],
        help="throughput: only the worker throughput runs; http: only the request path beside "
        "the floor (either printed, never written)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        action="append",
        help="with --only throughput: the stand-in model's delay, s (repeatable; default 0 and 1)",
    )
    parser.add_argument(
        "--queued",
        type=int,
        help=f"with --only throughput: conversations per run (default {FULL.queued})",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="with --only throughput: keep the processes' logs (and the raw profile)",
    )
    args = parser.parse_args()
    load.GENERATOR["choice"] = args.generator
    plan = QUICK if args.quick else FULL
    if args.only == "throughput":
        only_throughput(args, plan)
        return
    if args.only == "http":
        only_http(args, plan)
        return
    profile = args.profile if args.profile is not None else not args.quick
    if not profile or profiling.py_spy() is None:
        plan = dataclasses.replace(plan, profile_seconds=0)
    elif not plan.profile_seconds:
        plan = dataclasses.replace(plan, profile_seconds=FULL.profile_seconds)
    output = args.output or (None if args.quick else DOC)
    started = time.monotonic()
    run, results, other = _begin(args, plan)
    failed = True
    try:
        found = execute(plan, results, run)
        failed = False
    finally:
        try:
            run.clear_conversations()
        finally:
            run.drop_database()
        if failed:
            progress(f"bench failed; process logs kept in {run.workdir}")
        else:
            shutil.rmtree(run.workdir, ignore_errors=True)
    results.duration_seconds = time.monotonic() - started
    results.other_percent = other.percent()
    if results.other_percent > OTHER_LOAD_WARNING:
        progress(
            f"other work on the machine took {results.other_percent:.0f} % of a core on average "
            "during the run: the numbers are lower than on a quiet machine"
        )
    text = render(results, found, DOC)
    if output is not None:
        output.write_text(text)
    print(text)


def _begin(args: argparse.Namespace, plan: Plan) -> tuple[Run, Results, OtherLoad]:
    """A run's directory and database, its results so far (what ran, where, how busy the
    machine was before) and the count of other work on the machine from now on."""
    run = Run(uuid.uuid4().hex[:8], Path(tempfile.mkdtemp(prefix="bench-")))
    results = Results(
        command=command(args),
        date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        code=code_version(),
        generator=generator_name(),
        server_flags=server_flags(),
        background_percent=wait_for_quiet(max_wait=plan.quiet_wait),
    )
    progress(f"bench run {run.run_id}: logs in {run.workdir}")
    other = OtherLoad()
    run.create_database()
    return run, results, other


def _partial_run(
    args: argparse.Namespace,
    plan: Plan,
    measure: Callable[[Results, Run], None],
    *,
    keep_logs: bool,
) -> tuple[Results, float]:
    """One part of the benchmark on a throwaway database: the results and the other work on
    the machine meanwhile (% of a core). Logs are kept when it fails, or with `keep_logs`."""
    run, results, other = _begin(args, plan)
    try:
        measure(results, run)
    except BaseException:
        progress(f"bench failed; process logs kept in {run.workdir}")
        raise
    finally:
        try:
            run.clear_conversations()
        finally:
            run.drop_database()
    if not keep_logs:
        shutil.rmtree(run.workdir, ignore_errors=True)
    return results, other.percent()


def _print_tail(results: Results, other_percent: float) -> None:
    if results.profiles:
        print(profiles_section(results))
    print(f"other work on the machine: {other_percent:.0f} % of a core on average")
    for problem, n in sorted(results.problems.items()):
        print(f"logged: {problem}: {n}")


def only_throughput(args: argparse.Namespace, plan: Plan) -> None:
    """`--only throughput`: the worker runs at the full plan's size, printed, nothing written."""
    plan = dataclasses.replace(
        plan,
        profile_seconds=FULL.profile_seconds if args.profile else 0,
        queued=args.queued or plan.queued,
    )
    results, other = _partial_run(
        args,
        plan,
        lambda results, run: throughput_only(plan, results, run, args.delay or [0.0, 1.0]),
        keep_logs=args.keep_logs,
    )
    print(throughput_section(results))
    _print_tail(results, other)


def only_http(args: argparse.Namespace, plan: Plan) -> None:
    """`--only http`: the request path at the plan's size, printed, nothing written; with
    `--profile`, the API's profiles too (their raw samples kept with the logs)."""
    plan = dataclasses.replace(plan, profile_seconds=FULL.profile_seconds if args.profile else 0)
    results, other = _partial_run(
        args, plan, lambda results, run: http_only(plan, results, run), keep_logs=True
    )
    print(http_section(results))
    for route in (POST, GET):
        for key in ("admin", "user"):
            ratio = ratio_to_floor(results, route, key, 32)
            print(f"{route}, {key} key, c32: {ratio:.2f}{X} the floor")
    _print_tail(results, other)


if __name__ == "__main__":
    main()
