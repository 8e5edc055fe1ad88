"""Closed-loop HTTP load on loopback: wrk where installed, else an asyncio client of
comparable economy. Fixed concurrency for a fixed time (`run_load`): requests per second and
latency.

The fallback is also the module's command line: `python -m bench.load ...` is one of its
processes (two run side by side, as `wrk -t2`), printing its raw latencies and its own CPU
time as JSON. It imports the standard library only, so starting it costs little.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

WRK_DIR = Path(__file__).resolve().parent / "wrk"
THREADS, CONNECTIONS = 2, 32
# "auto": wrk where installed; "python": the fallback even so (to compare the two).
GENERATOR = {"choice": "auto"}
_RESULT = re.compile(r"^WRK_RESULT (\{.*\})$", re.MULTILINE)


@dataclass(frozen=True)
class Target:
    """What to send: POST bodies for `user_id`/`model_id`, or GETs of the ids in `ids_file`."""

    kind: str  # "post" | "get"
    base_url: str
    key: str
    user_id: str = ""
    model_id: str = ""
    ids_file: str = ""

    def script_args(self) -> list[str]:
        if self.kind == "post":
            return [self.user_id, self.model_id, self.key]
        return [self.ids_file, self.key]


@dataclass(frozen=True)
class LoadResult:
    requests: int  # answered, whatever the status
    failed: int  # status >= 400, socket errors, timeouts
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_seconds: float

    @property
    def ok(self) -> int:
        return self.requests - self.failed

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def _wrk() -> str | None:
    return shutil.which("wrk") if GENERATOR["choice"] == "auto" else None


def wrk_version() -> str | None:
    """`wrk 4.1.0`-like, or None when wrk is not installed (or not chosen)."""
    path = _wrk()
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk\s+(\S+)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def generator_name(connections: int = CONNECTIONS, threads: int = THREADS) -> str:
    version = wrk_version()
    if version:
        return f"{version} (`-t{threads} -c{connections}`, Lua scripts in bench/wrk/)"
    why = "wrk is not installed" if shutil.which("wrk") is None else "chosen with --generator"
    return (
        f"bench.load, the Python fallback ({why}): {threads} processes, "
        f"{connections} keep-alive connections in all"
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(
    target: Target, seconds: float, *, connections: int = CONNECTIONS, threads: int = THREADS
) -> LoadResult:
    """`connections` requests always in flight for `seconds`."""
    threads = min(threads, connections)
    if _wrk():
        return _run_wrk(target, seconds, connections, threads)
    return _run_fallback(target, seconds, connections, threads)


def _run_wrk(target: Target, seconds: float, connections: int, threads: int) -> LoadResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--timeout", "10s", "-s", str(WRK_DIR / f"{target.kind}.lua"), target.base_url]
    command += ["--", *target.script_args()]
    cpu = _children_cpu()
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    cpu = _children_cpu() - cpu
    match = _RESULT.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(match.group(1))
    failed = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return LoadResult(
        requests=r["requests"],
        failed=failed,
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        generator_cpu_seconds=cpu,
    )


def _run_fallback(target: Target, seconds: float, connections: int, threads: int) -> LoadResult:
    shares = [connections // threads + (i < connections % threads) for i in range(threads)]
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.load", "--target", json.dumps(target.__dict__)),
                *("--seconds", str(seconds), "--connections", str(share), "--lane-offset", str(i)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, share in enumerate(shares)
    ]
    parts = [json.loads(p.communicate(timeout=seconds + 30)[0]) for p in processes]
    latencies = sorted(itertools.chain.from_iterable(p["latencies_us"] for p in parts))
    return LoadResult(
        requests=len(latencies),
        failed=sum(p["failed"] for p in parts),
        seconds=max(p["seconds"] for p in parts),
        p50_ms=percentile(latencies, 50) / 1000,
        p99_ms=percentile(latencies, 99) / 1000,
        max_ms=(latencies[-1] if latencies else math.nan) / 1000,
        generator_cpu_seconds=sum(p["cpu_seconds"] for p in parts),
    )


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank of sorted values; NaN when there are none."""
    if not ordered:
        return math.nan
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


# --- the fallback generator's process ---------------------------------------------------------


def _requests(target: Target, host: str, lane: int) -> Iterator[bytes]:
    auth = f"Authorization: Bearer {target.key}\r\nHost: {host}\r\n"
    if target.kind == "post":
        prefix = (
            f'{{"user_id":"{target.user_id}","model_version_id":"{target.model_id}",'
            f'"max_tokens":64,"prompt":"bench {lane}-'
        )
        head = f"POST /conversations HTTP/1.1\r\n{auth}Content-Type: application/json\r\n"
        for n in itertools.count(1):
            body = f'{prefix}{n}"}}'.encode()
            yield f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    ids = Path(target.ids_file).read_text().split()
    start = lane * 7919 % len(ids)
    for conversation_id in itertools.cycle(ids[start:] + ids[:start]):
        yield f"GET /conversations/{conversation_id} HTTP/1.1\r\n{auth}\r\n".encode()


@dataclass
class _Tally:
    latencies_us: list[int] = field(default_factory=list)
    failed: int = 0


async def _lane(target: Target, lane: int, deadline: float, tally: _Tally) -> None:
    parts = urlsplit(target.base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = _requests(target, f"{host}:{port}", lane)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.failed += 1
        return
    try:
        while time.perf_counter() < deadline:
            payload = next(requests)
            started = time.perf_counter_ns()
            writer.write(payload)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if match is None:
                raise ValueError("no Content-Length")
            await reader.readexactly(int(match.group(1)))
            tally.latencies_us.append((time.perf_counter_ns() - started) // 1000)
            if int(head[9:12]) >= 400:
                tally.failed += 1
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        tally.failed += 1
    finally:
        writer.close()


async def _generate(target: Target, seconds: float, connections: int, offset: int) -> None:
    tally = _Tally()
    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    lanes = [_lane(target, offset * connections + i, deadline, tally) for i in range(connections)]
    await asyncio.gather(*lanes)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    print(json.dumps({**tally.__dict__, "seconds": elapsed, "cpu_seconds": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description="One process of the fallback load generator.")
    parser.add_argument("--target", required=True, help="a Target as JSON")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--lane-offset", type=int, default=0)
    args = parser.parse_args()
    target = Target(**json.loads(args.target))
    try:
        import uvloop
    except ImportError:
        asyncio.run(_generate(target, args.seconds, args.connections, args.lane_offset))
    else:
        uvloop.run(_generate(target, args.seconds, args.connections, args.lane_offset))


if __name__ == "__main__":
    main()
