"""docs/benchmarks.md from one run's results: tables, the issue-15 targets beside each number.

The section "Reading the numbers" is written by hand after a run and kept by the next one.
"""

from __future__ import annotations

import math
import platform
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import LoadResult, percentile
from bench.profile import Profile

READING = "## Reading the numbers"
READY_CALLS = 50
X = "\N{MULTIPLICATION SIGN}"  # as in "0.6 times the floor"
POST, GET = "POST /conversations", "GET /conversations/{id}"


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRow:
    app: str  # "floor" | "API"
    route: str
    key: str  # "admin" | "user" | "none" (the floor reads no key)
    connections: int
    load: LoadResult
    server_cpu_seconds: float
    machine_percent: float

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_seconds / self.load.requests if self.load.requests else 0

    @property
    def server_percent(self) -> float:
        return 100 * self.server_cpu_seconds / self.load.seconds if self.load.seconds else 0

    @property
    def generator_percent(self) -> float:
        return 100 * self.load.generator_cpu_seconds / self.load.seconds if self.load.seconds else 0


@dataclass(frozen=True)
class Readiness:
    p50_ms: float
    queued_jobs: int
    pending_rows: int


@dataclass(frozen=True)
class Pickup:
    rate: float  # asked for, per second
    achieved_rate: float
    submitted: int
    pickup_ms: list[float]  # started_at - created_at, sorted
    completed_ms: list[float]  # completed_at - created_at, sorted
    outcomes: Counter[str]
    statuses: Counter[str]
    worker_cpu_seconds: float
    seconds: float

    @property
    def cpu_ms_per_job(self) -> float:
        done = self.statuses.get("completed", 0)
        return 1000 * self.worker_cpu_seconds / done if done else math.nan


@dataclass(frozen=True)
class Idle:
    seconds: float
    commands: Counter[str]  # calls per command over the window, the benchmark's own excluded
    cpu_percent: float
    rss_mb: float

    @property
    def per_second(self) -> float:
        return sum(self.commands.values()) / self.seconds


@dataclass(frozen=True)
class Throughput:
    delay_seconds: float
    workers: int
    max_jobs: int
    queued: int
    statuses: Counter[str]
    llm_calls: int
    drain_seconds: float  # release -> last completed_at
    created_seconds: float  # first created_at -> last completed_at
    first_start_ms: float  # release -> first started_at
    wait_after_release_ms: list[float]  # started_at - release, sorted
    worker_cpu_seconds: float
    worker_cpu_percent: float
    machine_percent: float
    rss_mb: list[tuple[float, float]]  # per worker: (now, peak) after the drain
    outcomes: Counter[str]

    @property
    def completed(self) -> int:
        return self.statuses.get("completed", 0)

    @property
    def rate(self) -> float:
        return self.completed / self.drain_seconds if self.drain_seconds > 0 else math.nan

    @property
    def rate_from_created(self) -> float:
        return self.completed / self.created_seconds if self.created_seconds > 0 else math.nan

    @property
    def cpu_ms_per_job(self) -> float:
        return 1000 * self.worker_cpu_seconds / self.completed if self.completed else math.nan


@dataclass
class Results:
    command: str
    date: str
    code: str
    generator: str
    server_flags: list[str]
    background_percent: float
    duration_seconds: float = 0.0
    other_percent: float = math.nan  # CPU of work not this run's, % of a core, on average
    http: list[HttpRow] = field(default_factory=list)
    readiness: list[Readiness] = field(default_factory=list)
    api_memory_idle: tuple[float, float] = (math.nan, math.nan)
    api_memory: tuple[float, float] = (math.nan, math.nan)
    floor_memory: tuple[float, float] = (math.nan, math.nan)
    pickup: list[Pickup] = field(default_factory=list)  # the last one at the target's rate
    idle: Idle | None = None
    throughput: list[Throughput] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)
    profiles: list[Profile | None] = field(default_factory=list)


# --- formatting -----------------------------------------------------------------------------


def num(value: float, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def tally(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in lines)


def at_least(value: float, target: float, unit: str = "", digits: int = 2) -> str:
    if math.isnan(value):
        return "not measured"
    if value >= target:
        return "**met**"
    short = target - value
    return f"**missed** by {short:.{digits}f}{unit} ({100 * value / target:.0f} % of the target)"


def at_most(value: float, target: float, unit: str = "", digits: int = 1) -> str:
    if math.isnan(value):
        return "not measured"
    if value <= target:
        return "**met**"
    over = value - target
    return f"**missed** by {over:.{digits}f}{unit} ({value / target:.1f}{X} the target)"


def _floor(results: Results, row: HttpRow) -> HttpRow | None:
    return next(
        (
            f
            for f in results.http
            if f.app == "floor" and f.route == row.route and f.connections == row.connections
        ),
        None,
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def ratio_to_floor(results: Results, route: str, key: str, connections: int) -> float:
    row = next(
        (
            r
            for r in results.http
            if r.app == "API" and r.route == route and r.key == key and r.connections == connections
        ),
        None,
    )
    floor = _floor(results, row) if row else None
    return _ratio(row.load.rps, floor.load.rps) if row and floor else math.nan


def throughput_of(results: Results, delay: float, workers: int) -> Throughput | None:
    return next(
        (t for t in results.throughput if t.delay_seconds == delay and t.workers == workers), None
    )


# --- sections -------------------------------------------------------------------------------


def _shell(*command: str) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "?"
    return out.stdout.strip()


def machine(versions: dict[str, str], results: Results) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?"
    )
    memory = next(
        (
            ln.split()[1]
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if "MemTotal" in ln
        ),
        "0",
    )
    return "\n".join(
        [
            f"- CPU: {_shell('nproc')} cores (`nproc`), {model}; "
            f"{int(memory) / 1024**2:.0f} GiB memory; {platform.platform()}",
            f"- Other work on the machine: {results.background_percent:.0f} % of a core in the "
            f"2 s before the run, {num(results.other_percent, 0)} % on average during it (all "
            "busy time less this run's processes, PostgreSQL and Redis)",
            f"- Python {sys.version.split()[0]}, PostgreSQL {versions['postgres']}, "
            f"Redis {versions['redis']}, uvicorn {versions['uvicorn']} "
            f"(`{' '.join(results.server_flags)}` for both servers); all on this machine, "
            "with the load generator",
            f"- Load generator: {results.generator}",
        ]
    )


def targets(results: Results) -> str:
    post = ratio_to_floor(results, POST, "admin", 32)
    get = ratio_to_floor(results, GET, "admin", 32)
    post_user = ratio_to_floor(results, POST, "user", 32)
    get_user = ratio_to_floor(results, GET, "user", 32)
    one = throughput_of(results, 1, 1)
    two = throughput_of(results, 1, 2)
    scaling = _ratio(two.rate, one.rate) if one and two else math.nan
    rows: list[list[str]] = [
        [
            f"`{POST}` vs the floor, admin key, c32",
            f"≥ 0.6{X}",
            f"{num(post, 2)}{X}",
            at_least(post, 0.6, X),
        ],
        [
            f"`{GET}` vs the floor, admin key, c32",
            f"≥ 0.5{X}",
            f"{num(get, 2)}{X}",
            at_least(get, 0.5, X),
        ],
        [
            f"`{POST}`, user key (extra key lookup)",
            f"≥ 0.6{X}",
            f"{num(post_user, 2)}{X}",
            at_least(post_user, 0.6, X),
        ],
        [f"`{GET}`, user key", f"≥ 0.5{X}", f"{num(get_user, 2)}{X}", at_least(get_user, 0.5, X)],
    ]
    if results.pickup:
        p = results.pickup[-1]
        p50, p99 = percentile(p.pickup_ms, 50), percentile(p.pickup_ms, 99)
        rows += [
            [
                f"Submit → `running` p50 at {p.rate:.0f}/s",
                "≤ 15 ms",
                f"{num(p50)} ms",
                at_most(p50, 15, " ms"),
            ],
            [
                f"Submit → `running` p99 at {p.rate:.0f}/s",
                "≤ 60 ms",
                f"{num(p99)} ms",
                at_most(p99, 60, " ms"),
            ],
        ]
    if results.idle:
        i = results.idle
        rows += [
            [
                "Idle worker CPU",
                "≤ 1 % of a core",
                f"{num(i.cpu_percent, 2)} %",
                at_most(i.cpu_percent, 1, " %", 2),
            ],
            [
                "Idle worker Redis commands",
                "≤ 20 /s",
                f"{num(i.per_second)} /s",
                at_most(i.per_second, 20, " /s"),
            ],
        ]
    if one:
        rows.append(
            [
                "One worker, 1 s model, `WORKER_MAX_JOBS=100`",
                "≥ 80 conv/s",
                f"{num(one.rate)} conv/s",
                at_least(one.rate, 80, " conv/s", 1),
            ]
        )
    rows.append(
        [
            "Two workers vs one, same load",
            f"≥ 1.8{X}",
            f"{num(scaling, 2)}{X}",
            at_least(scaling, 1.8, X),
        ]
    )
    worker_peak = max((peak for t in results.throughput for _, peak in t.rss_mb), default=math.nan)
    api_peak = results.api_memory[1]
    rows += [
        [
            "API RSS under load (peak)",
            "< 150 MB",
            f"{num(api_peak, 0)} MB",
            at_most(api_peak, 149.9, " MB", 0),
        ],
        [
            "Worker RSS under load (peak)",
            "< 150 MB",
            f"{num(worker_peak, 0)} MB",
            at_most(worker_peak, 149.9, " MB", 0),
        ],
    ]
    if len(results.readiness) == 2:
        empty, full = results.readiness
        same = full.p50_ms <= 1.5 * empty.p50_ms + 1
        rows.append(
            [
                "`GET /health/ready` with a backlog",
                "cost does not grow with queued jobs",
                f"{num(empty.p50_ms)} ms empty → {num(full.p50_ms)} ms with "
                f"{full.queued_jobs:,} queued jobs, {full.pending_rows:,} pending rows",
                "**met** (within 50 % + 1 ms)"
                if same
                else f"**missed**: +{full.p50_ms - empty.p50_ms:.1f} ms "
                f"({full.p50_ms / empty.p50_ms:.1f}{X})",
            ]
        )
    cpu = [r for r in results.http if r.app == "API" and r.key == "admin" and r.connections == 32]
    cpu_text = ", ".join(f"{r.route.split()[0]} {num(r.cpu_ms_per_request, 2)} ms" for r in cpu)
    job = throughput_of(results, 1, 1)
    rows += [
        ["API CPU per request (admin key, c32)", "reported", cpu_text or "—", "reported"],
        [
            "Worker CPU per job (1 s model, one worker)",
            "reported",
            f"{num(job.cpu_ms_per_job, 2)} ms" if job else "—",
            "reported",
        ],
    ]
    return table(["measure (issue 15)", "target", "this run", "verdict"], rows)


def http_section(results: Results) -> str:
    rows = []
    for r in results.http:
        floor = _floor(results, r)
        if r.app == "floor" or floor is None:
            ratio, lat = "1" if r.app == "floor" else "—", ""
        else:
            ratio = f"{num(_ratio(r.load.rps, floor.load.rps), 2)}{X}"
            p50 = num(_ratio(r.load.p50_ms, floor.load.p50_ms))
            p99 = num(_ratio(r.load.p99_ms, floor.load.p99_ms))
            lat = f" ({p50}{X} / {p99}{X})"
        rows.append(
            [
                r.route,
                r.app,
                r.key,
                str(r.connections),
                f"{r.load.ok:,}",
                num(r.load.rps, 0),
                ratio,
                f"{num(r.load.p50_ms)} / {num(r.load.p99_ms)}{lat}",
                num(r.cpu_ms_per_request, 2),
                f"{r.server_percent:.0f} / {r.generator_percent:.0f} / {r.machine_percent:.0f}",
                str(r.load.failed),
            ]
        )
    headers = ["route", "app", "key", "conn.", "ok", "req/s", "req/s vs floor"]
    headers += [
        "p50 / p99 ms (vs floor)",
        "server CPU ms/req",
        "CPU % server / load gen. / machine",
    ]
    headers += ["failed"]
    return table(headers, rows)


def readiness_section(results: Results) -> str:
    rows = [
        [num(r.p50_ms, 2), f"{r.queued_jobs:,}", f"{r.pending_rows:,}"] for r in results.readiness
    ]
    return table(
        [
            f"`GET /health/ready` p50 ms (admin key, {READY_CALLS} calls)",
            "queued jobs",
            "pending rows",
        ],
        rows,
    )


def pickup_section(found: list[Pickup]) -> str:
    return table(PICKUP_HEADERS, [_pickup_row(p) for p in found])


def _pickup_row(p: Pickup) -> list[str]:
    ms, done = p.pickup_ms, p.completed_ms
    return [
        f"{p.rate:g}/s ({p.achieved_rate:.1f} sent)",
        str(p.submitted),
        num(percentile(ms, 50)),
        num(percentile(ms, 90)),
        num(percentile(ms, 99)),
        num(ms[-1] if ms else math.nan),
        f"{num(percentile(done, 50))} / {num(percentile(done, 99))}",
        num(p.cpu_ms_per_job, 2),
        num(100 * p.worker_cpu_seconds / p.seconds, 0) if p.seconds else "—",
        tally(p.statuses),
        tally(p.outcomes),
    ]


PICKUP_HEADERS = ["arrivals", "submitted", "p50 ms", "p90 ms", "p99 ms", "max ms"]
PICKUP_HEADERS += ["submit → completed p50 / p99 ms", "worker CPU ms/job", "worker CPU %"]
PICKUP_HEADERS += ["rows", "HTTP answers"]


def idle_section(i: Idle) -> str:
    top = ", ".join(f"{name} {calls / i.seconds:.2f}" for name, calls in i.commands.most_common())
    return (
        f"Over {i.seconds:.1f} s: **{i.per_second:.2f} Redis commands/s**, "
        f"**{i.cpu_percent:.2f} % of a core**, RSS {i.rss_mb:.0f} MB.\n\n"
        f"Per command (/s): {top or 'none'}."
    )


def throughput_section(results: Results) -> str:
    rows = []
    for t in results.throughput:
        waits = t.wait_after_release_ms
        rows.append(
            [
                f"{t.delay_seconds:g} s",
                str(t.workers),
                str(t.max_jobs),
                f"{t.completed}/{t.queued}",
                str(t.llm_calls),
                num(t.drain_seconds, 2),
                f"**{num(t.rate)}**",
                num(t.rate_from_created),
                " / ".join(
                    num(v, 0)
                    for v in (t.first_start_ms, percentile(waits, 50), percentile(waits, 99))
                ),
                num(t.cpu_ms_per_job, 2),
                f"{t.worker_cpu_percent:.0f} / {t.machine_percent:.0f}",
                " / ".join(f"{now:.0f} ({peak:.0f})" for now, peak in t.rss_mb),
                tally(
                    t.outcomes + Counter({k: v for k, v in t.statuses.items() if k != "completed"})
                ),
            ]
        )
    headers = ["model", "workers", "max_jobs", "completed", "LLM calls", "drain s", "conv/s"]
    headers += ["conv/s from first created", "started after release: first / p50 / p99 ms"]
    headers += ["worker CPU ms/job", "CPU % workers / machine", "worker RSS MB (peak)"]
    headers += ["other outcomes"]
    return table(headers, rows)


def memory_section(results: Results) -> str:
    rows = [
        [
            "API",
            f"{num(results.api_memory_idle[0], 0)} ({num(results.api_memory_idle[1], 0)})",
            "started, before any load",
        ],
        [
            "API",
            f"{num(results.api_memory[0], 0)} ({num(results.api_memory[1], 0)})",
            "after the HTTP load",
        ],
        [
            "floor",
            f"{num(results.floor_memory[0], 0)} ({num(results.floor_memory[1], 0)})",
            "after the HTTP load",
        ],
    ]
    for t in results.throughput:
        where = f"after {t.queued} jobs, {t.delay_seconds:g} s model, max_jobs {t.max_jobs}"
        each = " / ".join(f"{now:.0f} ({peak:.0f})" for now, peak in t.rss_mb)
        rows.append([f"worker {X} {t.workers}", each, where])
    if results.idle:
        rows.append(["worker, idle", f"{results.idle.rss_mb:.0f}", "idle window"])
    return table(["process", "RSS MB (peak)", "when"], rows)


METHOD = """\
- **Stack**: a new PostgreSQL database (migrated) and queue name per run, on the local
  PostgreSQL and Redis, removed at the end. The API (`api.main:create_app`) and the floor
  (`bench/floor_app.py`) run as one uvicorn process each with the same flags, the project
  defaults (`.env.example`: JSON logs at INFO, tracing set up as shipped, no exporter
  configured, DB pool 10+10) and the limits off (`SUBMIT_RATE_LIMIT=off`,
  `MAX_ACTIVE_CONVERSATIONS_PER_USER=0`, `QUEUE_MAX_DEPTH=0`): limits are not what is measured.
  The LLM is the stand-in (`tests/support/fake_llm.py`) in its own process, answering after
  `delay_seconds`; it is not a model.
- **Request path**: closed loop, every connection always has one request in flight, for a
  fixed time after a warm-up. No worker runs meanwhile. The floor does the least the route
  needs on the same database and Redis: POST = one INSERT into `conversation` + one LPUSH;
  GET = one SELECT by id. GETs cycle through 2,000 ids of rows the POST runs made. Latency is
  the load generator's (wrk: per request, coordinated omission not corrected, as in a closed
  loop). "server CPU ms/req" is the server process's utime+stime (/proc/<pid>/stat) over the
  run, divided by the requests answered.
- **Pickup**: one idle worker (project defaults), the stand-in answering at once. Submissions
  arrive at a fixed rate (open loop, each sent on schedule whatever the others do); pickup is
  `started_at - created_at` of each row, both PostgreSQL `now()` (the API's transaction start,
  the worker's claim).
- **Worker throughput**: `WORKER_MAX_JOBS=100`; the workers are started and ready, then
  paused (SIGSTOP); the conversations are submitted through the API, which queues them; the
  workers are resumed (SIGCONT) and "drain" runs from that moment to the last `completed_at`,
  so neither a worker's start-up nor the submissions are counted. "conv/s from first created"
  counts from the first `created_at` instead (includes the submissions). Worker CPU is the
  workers' own utime+stime over the drain, per completed conversation.
- **Idle worker**: one worker on a private `redis-server` (free loopback port, nothing else
  connected), after its start-up settled; commands from `INFO commandstats` deltas over the
  window (the benchmark's own INFO excluded), CPU from /proc.
- **RSS**: VmRSS (now) and VmHWM (peak) from /proc/<pid>/status.
"""


def profiles_section(results: Results) -> str:
    parts = [
        "py-spy (`record --rate 200 --gil`) on a separate load of the same kind after the "
        "measured ones; only samples of a thread holding the GIL count (Python running, not "
        'waiting). "On the stack": samples with a frame of that library anywhere in the stack '
        "(nested libraries overlap, and what wraps every request, such as middleware or "
        'tracing, is on nearly every stack); "innermost": samples whose innermost Python frame '
        "is in it (sums to 100; time in C code counts to its Python caller)."
    ]
    for p in results.profiles:
        if p is None:
            parts.append("- py-spy wrote no samples for one profile (could it attach?)")
            continue
        own = dict(p.own)
        rows = [[name, f"{share:.0f}", f"{own.get(name, 0):.0f}"] for name, share in p.on_stack]
        top = "; ".join(f"`{name}` {share:.1f} %" for name, share in p.functions)
        ours = "; ".join(f"`{name}` {share:.0f} %" for name, share in p.project)
        parts.append(
            f"**{p.what}** ({p.samples:,} samples)\n\n"
            + table(["area", "on the stack %", "innermost %"], rows)
            + f"\n\nInnermost functions: {top}.\n\nInnermost project function, with what it "
            f"calls: {ours}."
        )
    return "\n\n".join(parts)


# Written from `python -m bench.streaming` by hand; a `make bench` run keeps it as it is.
STREAMING = "## Streaming: the cost of publishing"
# Written by `python -m bench.fairness --output docs/benchmarks.md`; kept the same way.
FAIRNESS = "## Fair scheduling and priorities"


def kept_section(doc: Path, heading: str) -> list[str]:
    """The section under `heading` as the document has it, or nothing."""
    if doc.exists() and heading in (text := doc.read_text()):
        return [heading + text.split(heading, 1)[1].split("\n## ", 1)[0].rstrip()]
    return []


def kept_reading(doc: Path) -> str:
    if doc.exists() and READING in (text := doc.read_text()):
        return text.split(READING, 1)[1].split("\n## ", 1)[0].strip()
    return "- (written by hand after reading the tables)"


def render(results: Results, versions: dict[str, str], doc: Path) -> str:
    logged = "\n".join(f"- {k}: {v}" for k, v in sorted(results.problems.items())) or "- none"
    sections = [
        "# Benchmarks\n\n"
        "Measured by `make bench` (`python -m bench`; the code is in `bench/`): the API and the "
        "worker beside a floor app on the same PostgreSQL and Redis, in one run, on one machine. "
        "The targets are those of issue 15.",
        f"## Run\n\n- Command: {results.command}\n- Date: {results.date}\n- Code: {results.code}\n"
        f"- Took {results.duration_seconds:.0f} s",
        f"## Machine\n\n{machine(versions, results)}",
        f"## Targets (issue 15)\n\n{targets(results)}",
        "## Request path beside the floor\n\nNo worker running. Ratios are the API's over the "
        "floor's at the same concurrency; for latency, above 1 is slower.\n\n"
        + http_section(results),
        "## Readiness probe and the backlog\n\nThe same probe on an empty queue and after the "
        "POST runs left their jobs queued (no worker ran) and their rows pending.\n\n"
        + readiness_section(results),
    ]
    if results.pickup:
        sections.append(
            "## Pickup: submit → `running`\n\n`started_at - created_at` of every row, one idle "
            "worker, the stand-in answering at once; a light rate first, then the target's.\n\n"
            + pickup_section(results.pickup)
        )
    if results.throughput:
        sections.append(
            "## Worker throughput\n\nConversations already queued when the paused workers are "
            "resumed; drain = resume → last `completed_at`.\n\n" + throughput_section(results)
        )
    if results.idle:
        sections.append("## Idle worker\n\n" + idle_section(results.idle))
    if results.profiles:
        sections.append("## Profiles\n\n" + profiles_section(results))
    sections += [
        "## Memory (RSS)\n\n" + memory_section(results),
        "## Warnings and errors logged\n\nBy the API, floor and workers during the run.\n\n"
        + logged,
        f"## How each number is measured\n\n{METHOD.rstrip()}",
        *kept_section(doc, STREAMING),
        *kept_section(doc, FAIRNESS),
        f"{READING}\n\n{kept_reading(doc)}\n",
    ]
    return "\n\n".join(sections)
