"""A process given a bad setting refuses to start, and says which variable is wrong.

Run as an operator would: `python -m worker` and uvicorn with the API factory, in a
directory without `.env`, with nothing but the environment below. A bad value must stop
them before they connect to anything, so no database or Redis is needed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BAD_SETTINGS = [
    pytest.param(
        {"LLM_TIMEOUT_SECONDS": "180"},
        "LLM_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS",
        id="llm-timeout-equals-job-timeout",
    ),
    pytest.param(
        {"WORKER_LEASE_SECONDS": "180"},
        "WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS",
        id="lease-equals-job-timeout",
    ),
    pytest.param({"POSTGRES_PORT": "not-a-port"}, "POSTGRES_PORT", id="malformed-port"),
]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The environment of the test run (its database, its keys) must not leak in.
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(cwd)}
    return subprocess.run(
        command,
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(("env", "message"), BAD_SETTINGS)
def test_the_worker_exits_naming_the_bad_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = _run([sys.executable, "-m", "worker"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    # One line, no traceback: the reader is an operator.
    assert result.stderr.startswith("invalid configuration: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("env", "message"), BAD_SETTINGS[1:])
def test_the_api_exits_naming_the_bad_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    command = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", "0"]
    result = _run(command, env, tmp_path)
    assert result.returncode != 0, result.stderr
    # One line, no traceback, as from the worker.
    assert result.stderr.startswith("invalid configuration: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "Application startup complete" not in result.stderr
