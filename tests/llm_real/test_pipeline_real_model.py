"""The whole pipeline against a real inference server nobody here wrote: llama.cpp + SmolLM2.

Real API and worker processes; the model version uses provider `openai`, so the worker
talks to llama.cpp's OpenAI-compatible `/v1/chat/completions`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from scripts import local_llm
from shared.settings import Settings
from tests.support import database
from tests.support.auth import ADMIN_HEADERS
from tests.support.llama_server import running_llm_server
from tests.support.processes import Process, start_api, start_worker
from tests.support.stack import stack_env

pytestmark = [pytest.mark.llm_real, pytest.mark.e2e]

TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def real_database() -> Iterator[URL]:
    with database.migrated_database() as url:
        yield url


def _start(env: dict[str, str], workdir: Path) -> tuple[list[Process], httpx.Client]:
    api, base_url = start_api(env, workdir)
    worker = start_worker(env, workdir)
    return [api, worker], httpx.Client(base_url=base_url, timeout=10, headers=ADMIN_HEADERS)


def _register(client: httpx.Client) -> tuple[str, str]:
    user = client.post("/users", json={"email": f"{time.monotonic_ns()}@example.com"})
    model = client.post(
        "/model-versions",
        json={
            "provider": "openai",
            "model_name": local_llm.MODEL_NAME,
            "version_tag": str(time.monotonic_ns()),
            "max_tokens_cap": 48,
        },
    )
    assert user.status_code == 201, user.text
    assert model.status_code == 201, model.text
    return user.json()["id"], model.json()["id"]


def _wait(client: httpx.Client, cid: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/conversations/{cid}").json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.2)
    raise AssertionError(f"conversation {cid} did not finish in {timeout}s")


def test_a_real_model_answers_and_a_stopped_server_fails_with_a_reason(
    settings: Settings, real_database: URL, tmp_path: Path
) -> None:
    with running_llm_server(ctx=1024, threads=1, log_dir=tmp_path) as llm:
        own = settings.model_copy(
            update={"DATABASE_URL": real_database.render_as_string(hide_password=False)}
        )
        env = stack_env(
            own,
            "http://127.0.0.1:9",  # no Ollama: the openai provider is the one in use
            tmp_path,
            OPENAI_BASE_URL=llm.base_url,
            # A real model on a shared 2-core machine: give one call room.
            OLLAMA_TIMEOUT_SECONDS="60",
            WORKER_JOB_TIMEOUT_SECONDS="90",
            WORKER_LEASE_SECONDS="120",
        )
        processes, client = _start(env, tmp_path)
        try:
            user_id, model_id = _register(client)
            submitted = client.post(
                "/conversations",
                json={
                    "user_id": user_id,
                    "model_version_id": model_id,
                    "prompt": "Name one colour of the rainbow.",
                    "max_tokens": 200,
                    "temperature": 0,
                },
            )
            assert submitted.status_code == 202, submitted.text
            done = _wait(client, submitted.json()["id"], timeout=120)
            assert done["status"] == "completed", done
            assert done["response"].strip()
            assert done["input_tokens"] > 10  # the system prompt alone is longer than that
            assert 0 < done["output_tokens"] <= 48  # bounded by the model version's cap
            assert done["total_tokens"] == done["input_tokens"] + done["output_tokens"]
            assert done["latency_ms"] > 0
            assert done["finish_reason"] in {"stop", "length"}
            assert done["prompt_version"] == "v1"

            llm.stop()
            failing = client.post(
                "/conversations",
                json={"user_id": user_id, "model_version_id": model_id, "prompt": "Hello?"},
            )
            assert failing.status_code == 202
            failed = _wait(client, failing.json()["id"], timeout=60)
            assert failed["status"] == "failed"
            assert failed["error_code"] == "llm_unavailable"
            assert failed["attempts"] == 3
        finally:
            client.close()
            for process in processes:
                process.stop()
