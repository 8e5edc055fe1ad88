"""The real API and worker processes, started for a test (or soak, bench) and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from tests.support.log_capture import LogEvent, log_events

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may take it before you do)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: object, *, timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, message: str | None = None) -> list[LogEvent]:
        """The lines of its JSON log as timed events (`message`: only those saying it)."""
        return log_events(self.log(), message)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int | None:
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def _spawn(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    return Process(name=name, popen=popen, log_path=log_path, env=dict(env))


def start_api(env: Mapping[str, str], log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    args = [
        "-m",
        "uvicorn",
        "--factory",
        "api.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = _spawn("api", [*args, "--no-access-log"], env, log_dir)
    base_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive:
            raise RuntimeError(f"API exited:\n{process.log()}")
        try:
            return httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, what="the API to answer")
    except BaseException:
        process.stop()  # an API that never answered must not outlive the test
        raise
    return process, base_url


def start_worker(env: Mapping[str, str], log_dir: Path, *, wait: bool = True) -> Process:
    process = _spawn("worker", ["-m", "worker"], env, log_dir)
    if wait:
        client = redis.Redis.from_url(env["REDIS_URL"])
        pattern = f"{env['QUEUE_NAME']}:health-check:*:{process.popen.pid}"

        def up() -> bool:
            if not process.alive:
                raise RuntimeError(f"worker exited:\n{process.log()}")
            return any(client.scan_iter(match=pattern)) and "worker_ready" in process.log()

        try:
            wait_until(up, timeout=30, what="the worker heartbeat")
        except BaseException:
            process.stop()  # a worker that never came up must not outlive the test
            raise
        finally:
            client.close()
    return process
