"""`make run` (scripts/run_local.sh): the banner once everything answers, and Ctrl-C ends the
run with exit code 0, so `make` reports no error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.ready_banner import MetricsState, metrics_state
from shared.settings import Settings
from tests.support.stack import stack_env

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on, as node_exporter may on 9100."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_ctrl_c_after_the_banner_exits_0(
    settings: Settings, database_url: object, tmp_path: Path, taken_port: int
) -> None:
    api_port = _free_port()
    env = {
        **os.environ,
        **stack_env(
            settings,
            "http://127.0.0.1:1",
            tmp_path,
            WORKER_METRICS_PORT=str(taken_port),
            LOG_FORMAT="HUMAN",
        ),
        "BIN": str(ROOT / ".venv" / "bin"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(api_port),
        "WITH_LOCAL_LLM": "0",
    }
    run = subprocess.Popen(
        [str(ROOT / "scripts" / "run_local.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the Ctrl-C below reaches only it
    )
    lines: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if line.strip() == "stop            Ctrl-C":
                # What a terminal's Ctrl-C does: SIGINT to every process of the foreground group.
                os.killpg(run.pid, signal.SIGINT)
        code = run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    output = "".join(lines)
    assert code == 0, output
    banner = output[output.index("ai-eng-api is up") :]
    assert f"ai-eng-api is up: http://localhost:{api_port}" in banner
    assert f"API docs        http://localhost:{api_port}/docs" in banner
    assert f"not served: 127.0.0.1:{taken_port} is taken" in banner
    assert "set WORKER_METRICS_PORT in .env" in banner
    assert "`make run LLM=local` serves one" in banner
    assert "stopping..." in output
    assert "Traceback" not in output
    assert "worker_stopped" in output


def test_metrics_state_from_json_and_human_lines() -> None:
    json_line = (
        '{"level": "INFO", "message": "metrics_server_started", '
        '"extra": {"host": "127.0.0.1", "port": 9100}}'
    )
    human_line = (
        "2026-11-28 17:00:00.000 | WARNING  | __main__ | metrics_server_unavailable | "
        "error=[Errno 98] address already in use"
    )
    assert metrics_state("other\n" + json_line) == MetricsState(port=9100)
    assert metrics_state(human_line) == MetricsState(
        port=None, error="[Errno 98] address already in use"
    )
    assert metrics_state("worker_starting\n") is None
