"""A running stack over HTTP: the real API and worker processes, and the settings they share.

`stack_env` is the environment every harness gives its processes (short leases, fast sweeps,
JSON logs, spans to a file); `Stack` drives one API and its workers as a client would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from shared.settings import Settings
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY
from tests.support.processes import Process, start_api, start_worker

TERMINAL = {"completed", "failed", "cancelled"}


def stack_env(settings: Settings, llm_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": settings.database_url.render_as_string(hide_password=False),
        "REDIS_URL": settings.REDIS_URL,
        "QUEUE_NAME": f"{settings.QUEUE_NAME}:e2e:{workdir.name}",
        "OLLAMA_BASE_URL": llm_url,
        "OLLAMA_STARTUP_CHECK_ENABLED": "false",
        "OLLAMA_TIMEOUT_SECONDS": "2",
        "WORKER_JOB_TIMEOUT_SECONDS": "6",
        "WORKER_LEASE_SECONDS": "8",
        "WORKER_MAX_ATTEMPTS": "3",
        "WORKER_RETRY_BASE_SECONDS": "0.1",
        "WORKER_RETRY_MAX_SECONDS": "0.3",
        "WORKER_POLL_DELAY_SECONDS": "0.05",
        "WORKER_SWEEP_INTERVAL_SECONDS": "1",
        "WORKER_SWEEP_PENDING_GRACE_SECONDS": "2",
        "WORKER_HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "5",
        "WORKER_METRICS_PORT": "0",
        "LOG_FORMAT": "JSON",
        "LOG_LEVEL": "INFO",
        "OTEL_TRACES_FILE": str(workdir / "spans.jsonl"),
        # The traces the tests read keep every span, fast requests' client spans too.
        "TRACE_DETAIL_MIN_MS": "0",
        "ENVIRONMENT": "DEV",
        "ADMIN_API_KEY": ADMIN_KEY,
    }
    env.update(extra)
    return env


@dataclass
class Stack:
    base_url: str
    api: Process
    env: dict[str, str]
    workdir: Path
    workers: list[Process] = field(default_factory=list)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=10, headers=ADMIN_HEADERS)

    def add_worker(self, **extra_env: str) -> Process:
        worker = start_worker({**self.env, **extra_env}, self.workdir)
        self.workers.append(worker)
        return worker

    def setup_model(
        self, *, provider: str = "ollama", model_name: str = "llama3.2:3b"
    ) -> tuple[str, str]:
        user = self.client.post("/users", json={"email": f"{time.monotonic_ns()}@example.com"})
        model = self.client.post(
            "/model-versions",
            json={
                "provider": provider,
                "model_name": model_name,
                "version_tag": str(time.monotonic_ns()),
            },
        )
        assert user.status_code == 201, user.text
        assert model.status_code == 201, model.text
        return user.json()["id"], model.json()["id"]

    def submit(self, user_id: str, model_id: str, prompt: str, **fields: Any) -> dict[str, Any]:
        response = self.client.post(
            "/conversations",
            json={"user_id": user_id, "model_version_id": model_id, "prompt": prompt, **fields},
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_all(self, ids: list[str], *, timeout: float = 60) -> dict[str, dict[str, Any]]:
        """Poll each conversation until it is finished; fail listing the ones that are not."""
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(done) < len(ids):
            for cid in ids:
                if cid not in done:
                    body = self.client.get(f"/conversations/{cid}").json()
                    if body["status"] in TERMINAL:
                        done[cid] = body
            time.sleep(0.1)
        stuck = [cid for cid in ids if cid not in done]
        assert not stuck, f"{len(stuck)} conversations never finished, e.g. {stuck[:3]}"
        return done

    def spans(self) -> list[dict[str, Any]]:
        path = self.workdir / "spans.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.client.close()
        for process in [*self.workers, self.api]:
            process.stop()


@contextmanager
def running_stack(
    settings: Settings,
    database: URL,
    llm_url: str,
    workdir: Path,
    *,
    workers: int = 1,
    **env: str,
) -> Iterator[Stack]:
    """The API and `workers` worker processes on `database` (`env` on top of `stack_env`),
    stopped when the block ends."""
    own = settings.model_copy(
        update={"DATABASE_URL": database.render_as_string(hide_password=False)}
    )
    full_env = stack_env(own, llm_url, workdir, **env)
    api, base_url = start_api(full_env, workdir)
    running = Stack(base_url=base_url, api=api, env=full_env, workdir=workdir)
    try:
        for _ in range(workers):
            running.add_worker()
        yield running
    finally:
        running.stop()
