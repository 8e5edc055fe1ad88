"""The stand-in LLM server as a separate process, controlled over its HTTP control API.

For end-to-end tests whose API and worker run as their own processes: those reach the
stand-in by URL, and the test steers it with the same calls as the in-process server::

    with FakeLLMProcess() as llm:
        llm.configure(mode="fail_n_then_ok", fail_n=2, status=503)
        ... start the worker with OLLAMA_BASE_URL=llm.url ...
        assert llm.stats().calls_for("hello") == 3
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.fake_llm import READY_PREFIX
from tests.support.fake_llm_behaviour import Stats

REPO_ROOT = Path(__file__).resolve().parents[2]


class RemoteFakeLLM:
    """Control of a stand-in already listening at `url` (any process)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.url}{path}", json=payload, timeout=5.0, trust_env=False)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` (fields of `Behaviour`) into the behaviour; returns the result."""
        return self._post("/_control", changes)

    def reset(self) -> None:
        """Default behaviour and zero counters."""
        self._post("/_reset", {})

    def stats(self) -> Stats:
        """Calls so far and the last request seen."""
        response = httpx.get(f"{self.url}/_stats", timeout=5.0, trust_env=False)
        response.raise_for_status()
        return Stats(**response.json())


class FakeLLMProcess(RemoteFakeLLM):
    """Runs `python -m tests.support.fake_llm` and waits until it listens."""

    def __init__(self, *, port: int = 0, config: dict[str, Any] | None = None) -> None:
        super().__init__("")
        self._port = port
        self._config = config or {}
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 10.0) -> FakeLLMProcess:
        """Start the process and read the URL it prints; raises if it does not come up."""
        command = [sys.executable, "-m", "tests.support.fake_llm", "--port", str(self._port)]
        command += ["--config", json.dumps(self._config)]
        self._process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    line = self._process.stdout.readline()
                    if line.startswith(READY_PREFIX):
                        self.url = line[len(READY_PREFIX) :].strip()
                        return self
                    if not line:  # the process exited before listening
                        break
        self.stop()
        raise RuntimeError(f"fake LLM process did not start within {timeout}s")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> FakeLLMProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
