"""Where a process's CPU goes under load: py-spy samples, summed by library and function.

A profile is taken on a separate load, after the measured ones (py-spy pauses the process for
each sample), so it never changes a number in the tables. Only samples of a thread holding the
GIL count: Python code running, not a thread waiting on a lock or the event loop on epoll.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RATE = 200  # samples per second

# Top-level module of a frame's file to the name of what runs there.
AREAS = {
    "sqlalchemy": "SQLAlchemy",
    "opentelemetry": "OpenTelemetry",
    "loguru": "loguru",
    "logging": "logging (stdlib)",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "fastapi": "FastAPI / Starlette",
    "starlette": "FastAPI / Starlette",
    "asyncpg": "asyncpg",
    "redis": "redis-py / arq",
    "arq": "redis-py / arq",
    "uvicorn": "uvicorn",
    "httpx": "httpx / httpcore",
    "httpcore": "httpx / httpcore",
    "anyio": "anyio",
    "api": "project: api/",
    "shared": "project: shared/",
    "worker": "project: worker/",
    "asyncio": "asyncio",
    "selectors": "asyncio",
    "threading": "threads (stdlib)",
    "concurrent": "threads (stdlib)",
    "queue": "threads (stdlib)",
    "json": "json",
    "prometheus_client": "prometheus_client",
    "limits": "limits",
}


def _module_path(path: str) -> str:
    """A file's path from its top-level package: `sqlalchemy/orm/session.py`."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    root = f"{ROOT}/"
    if path.startswith(root):
        return path[len(root) :]
    stdlib = re.search(r"/lib/python3\.\d+/(.*)$", path)
    return stdlib.group(1) if stdlib else path


def py_spy() -> str | None:
    """The py-spy of this environment (a dev dependency), or one on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@dataclass(frozen=True)
class Profile:
    what: str
    samples: int
    on_stack: list[tuple[str, float]]  # area, % of samples with a frame of it on the stack
    own: list[tuple[str, float]]  # area, % of samples whose innermost frame is in it
    functions: list[tuple[str, float]]  # innermost function, % of samples
    project: list[tuple[str, float]]  # innermost project function, callees included, %


def _frame(raw: str) -> tuple[str, str]:
    """`func (/full/path.py)` to (`func (module/path.py)`, area)."""
    function, _, path = raw.rpartition(" (")
    module = _module_path(path.rstrip(")"))
    top = module.split("/", 1)[0].removesuffix(".py")
    return f"{function} ({module})", AREAS.get(top, "other")


# The bottom of every stack (how the process was started): not a place time is spent.
_START = ("<frozen runpy>", "click/")


def start(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `seconds` into `output` (collapsed stacks, no line numbers)."""
    command = [py_spy() or "py-spy", "record", "--pid", str(pid), "--duration"]
    command += [str(max(1, round(seconds))), "--rate", str(RATE), "--format", "raw"]
    command += ["--nolineno", "--gil", "--full-filenames", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(what: str, raw: Path, top: int = 8) -> Profile | None:
    """None when py-spy wrote nothing (it could not attach)."""
    if not raw.exists():
        return None
    samples = 0
    on_stack: Counter[str] = Counter()
    own: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    project: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if not any(m in f for m in _START)]
        if not frames:
            continue
        samples += count
        for area in {area for _, area in frames}:
            on_stack[area] += count
        own[frames[-1][1]] += count
        functions[frames[-1][0]] += count
        ours = [name for name, area in frames if area.startswith("project:")]
        if ours:
            project[ours[-1]] += count
    if not samples:
        return None

    def shares(counts: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, 100 * c / samples) for name, c in counts.most_common(n)]

    return Profile(
        what,
        samples,
        on_stack=shares(on_stack, 14),
        own=shares(own, 14),
        functions=shares(functions, top),
        project=shares(project, top),
    )
