"""Wait until `make run` is up, then print one short banner: where the API, its docs and the
worker's metrics are, the local model's id (`make run LLM=local`) and how to stop.

    python -m scripts.ready_banner --api http://127.0.0.1:8000 --worker-log run/worker.log \
        [--local-llm http://127.0.0.1:8080]

Run in the background by scripts/run_local.sh. It reads: the API's `/health/ready`, the
worker's own log line about its metrics endpoint (`metrics_server_started` or
`metrics_server_unavailable`), and with `--local-llm` it registers the local model on the API
(once; later runs find the same id). It exits 0 after the banner, 1 when the deadline passes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts import local_llm
from shared.settings import Settings, SettingsError, load_settings

POLL_SECONDS = 0.5
_PORT = re.compile(r"""\bport["']?\s*[=:]\s*(\d+)""")
_ERROR = re.compile(r"""\berror["']?\s*[=:]\s*["']?([^"'|}\n]+)""")


@dataclass(frozen=True)
class MetricsState:
    """What the worker said about its metrics endpoint: its port, or why it has none."""

    port: int | None
    error: str | None = None


def metrics_state(log_text: str) -> MetricsState | None:
    """The worker's metrics outcome from its log (JSON or human lines); None if not said yet."""
    for line in log_text.splitlines():
        if "metrics_server_started" not in line and "metrics_server_unavailable" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            extra = record.get("extra") or {}
            if record.get("message") == "metrics_server_started":
                return MetricsState(port=int(extra["port"]))
            if record.get("message") == "metrics_server_unavailable":
                return MetricsState(port=None, error=str(extra.get("error", "")))
            continue
        if "metrics_server_started" in line and (port := _PORT.search(line)):
            return MetricsState(port=int(port.group(1)))
        if "metrics_server_unavailable" in line:
            error = _ERROR.search(line)
            return MetricsState(port=None, error=error.group(1).strip() if error else "")
    return None


def _public(host: str) -> str:
    # A server bound to every interface is reached through localhost from this machine.
    return "localhost" if host in {"0.0.0.0", "::", ""} else host


def metrics_line(state: MetricsState | None, settings: Settings) -> str:
    host, wanted = _public(settings.WORKER_METRICS_HOST), settings.WORKER_METRICS_PORT
    if state is not None and state.port is not None:
        return f"http://{host}:{state.port}/metrics"
    if state is None:
        return "not reported yet (see the worker's metrics_server_* log line)"
    taken = " (9100 is also node_exporter's usual port)" if wanted == 9100 else ""
    return (
        f"not served: {host}:{wanted} is taken{taken}; set WORKER_METRICS_PORT in .env "
        "(0 picks a free port)"
    )


def banner(
    *,
    api: str,
    settings: Settings,
    metrics: MetricsState | None,
    model_version_id: str | None,
    local_llm_url: str | None,
) -> str:
    lines = ["", "=" * 72, f"  ai-eng-api is up: {api}"]
    if settings.openapi_enabled and settings.SWAGGER_UI_ENABLED:
        lines.append(f"  API docs        {api}{settings.SWAGGER_UI_PATH}")
    lines.append(f"  worker metrics  {metrics_line(metrics, settings)}")
    if model_version_id is not None:
        lines += [
            f"  model           {local_llm.MODEL_NAME} (provider {local_llm.PROVIDER}, "
            f"llama.cpp at {local_llm_url})",
            "  for the README's examples, paste:",
            f"    MODEL={model_version_id}",
        ]
    elif local_llm_url is not None:
        lines.append("  model           could not be registered: see the lines above")
    else:
        lines.append("  model           none served here: `make run LLM=local` serves one")
    lines += ["  stop            Ctrl-C", "=" * 72, ""]
    return "\n".join(lines)


def _answers(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_up(
    api: str, worker_log: Path, local_llm_url: str | None, deadline: float
) -> MetricsState | None:
    """Wait for the API's readiness, the model server and the worker's metrics line."""
    metrics: MetricsState | None = None
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if metrics is None and worker_log.exists():
                metrics = metrics_state(worker_log.read_text(errors="replace"))
            if (
                metrics is not None
                and _answers(http, f"{api}/health/ready")
                and (local_llm_url is None or _answers(http, f"{local_llm_url}/v1/models"))
            ):
                return metrics
            time.sleep(POLL_SECONDS)
    raise TimeoutError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.ready_banner", description=__doc__)
    parser.add_argument("--api", required=True, help="the API's base URL")
    parser.add_argument("--worker-log", required=True, type=Path, help="the worker's output")
    parser.add_argument("--local-llm", default=None, help="the local model server's base URL")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait at most")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    api = args.api.rstrip("/")
    try:
        metrics = wait_until_up(api, args.worker_log, args.local_llm, time.monotonic() + args.wait)
    except TimeoutError:
        print(f"not up after {args.wait:.0f}s: see the log lines above", file=sys.stderr)
        return 1
    model_version_id = None
    if args.local_llm is not None:
        try:
            model_version_id = local_llm.register_model_version(api)
        except (httpx.HTTPError, RuntimeError) as exc:
            print(f"could not register the local model at {api}: {exc}", file=sys.stderr)
    print(
        banner(
            api=api.replace("//127.0.0.1:", "//localhost:"),
            settings=settings,
            metrics=metrics,
            model_version_id=model_version_id,
            local_llm_url=args.local_llm,
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before everything was up: the run stops anyway
        sys.exit(130)
