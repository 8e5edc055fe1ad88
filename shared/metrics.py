"""Prometheus metrics of both processes, made by one factory on a registry of their own.

Why a factory and not module-level metrics: prometheus-client refuses to register a name twice
in one registry, and module-level metrics keep their counts for the life of the process. Each
process calls `create_metrics()` once at start and passes the `Metrics` along (app state, arq
ctx); each test makes a fresh one and reads exact values, and nothing touches the global
default registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# A job is dominated by one LLM call that may take up to the job timeout (minutes).
_LONG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300)
# Time in the queue: near zero when workers keep up, minutes when they do not.
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# Model metrics are labelled by the model version's id: the admin-managed registry bounds it.
# Never by a model name, which is free text (and, in a response, whatever the LLM server says).
MODEL_VERSION_LABEL = "model_version_id"


@dataclass(frozen=True)
class Metrics:
    """Every metric of the service; a process uses the ones that concern it."""

    registry: CollectorRegistry
    # API
    http_requests_total: Counter
    http_request_duration_seconds: Histogram
    conversations_submitted_total: Counter
    # Worker
    conversations_completed_total: Counter
    conversations_failed_total: Counter
    job_duration_seconds: Histogram
    queue_wait_seconds: Histogram
    llm_latency_seconds: Histogram
    llm_tokens_total: Counter
    job_retries_total: Counter
    model_server_in_flight: Gauge
    model_server_capacity: Gauge
    model_server_refusals_total: Counter
    model_server_errors_total: Counter
    model_server_capacity_waits_total: Counter
    # Model servers as Redis shows them across workers, set by the API at scrape time
    model_server_slots_held: Gauge
    model_server_healthy: Gauge
    # Queue health, set by whichever process samples the queue
    queue_depth: Gauge
    oldest_pending_age_seconds: Gauge
    queue_waiting_by_priority: Gauge
    oldest_pending_age_by_priority_seconds: Gauge
    workers_alive: Gauge


def create_metrics(
    registry: CollectorRegistry | None = None, *, process_metrics: bool = True
) -> Metrics:
    """Register all metrics on `registry` (a new one by default).

    `process_metrics` adds the CPU, memory, GC and Python-version collectors that the default
    registry would have had.
    """
    reg = registry if registry is not None else CollectorRegistry()
    if process_metrics:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
    return Metrics(
        registry=reg,
        http_requests_total=Counter(
            "http_requests_total",
            "HTTP requests handled, by route template and status.",
            ["method", "route", "status"],
            registry=reg,
        ),
        http_request_duration_seconds=Histogram(
            "http_request_duration_seconds",
            "Time to handle an HTTP request, by route template.",
            ["method", "route"],
            registry=reg,
        ),
        conversations_submitted_total=Counter(
            "conversations_submitted_total",
            "Conversations accepted: queued for generation or stored as given.",
            ["mode"],
            registry=reg,
        ),
        conversations_completed_total=Counter(
            "conversations_completed_total",
            "Conversations whose answer was generated, by model version.",
            [MODEL_VERSION_LABEL],
            registry=reg,
        ),
        conversations_failed_total=Counter(
            "conversations_failed_total",
            "Conversations failed for good, by error code.",
            ["error_code"],
            registry=reg,
        ),
        job_duration_seconds=Histogram(
            "job_duration_seconds",
            "Time a worker spent on one job attempt.",
            buckets=_LONG_BUCKETS,
            registry=reg,
        ),
        queue_wait_seconds=Histogram(
            "queue_wait_seconds",
            "Time from enqueue to a worker starting the job.",
            buckets=_WAIT_BUCKETS,
            registry=reg,
        ),
        llm_latency_seconds=Histogram(
            "llm_latency_seconds",
            "Time of one LLM generation call, by provider and model version.",
            ["provider", MODEL_VERSION_LABEL],
            buckets=_LONG_BUCKETS,
            registry=reg,
        ),
        llm_tokens_total=Counter(
            "llm_tokens_total",
            "Tokens sent to (input) and generated by (output) the LLM, by model version.",
            ["direction", MODEL_VERSION_LABEL],
            registry=reg,
        ),
        job_retries_total=Counter(
            "job_retries_total",
            "Job attempts that failed transiently and were scheduled again.",
            ["error_code"],
            registry=reg,
        ),
        model_server_in_flight=Gauge(
            "model_server_in_flight",
            "Generation calls this process has in flight to a model server.",
            ["provider", "server"],
            registry=reg,
        ),
        model_server_capacity=Gauge(
            "model_server_capacity",
            "Calls a model server takes at once across all workers (0: no limit).",
            ["provider", "server"],
            registry=reg,
        ),
        model_server_refusals_total=Counter(
            "model_server_refusals_total",
            "Connections a model server refused (it is then set aside for a while).",
            ["provider", "server"],
            registry=reg,
        ),
        model_server_errors_total=Counter(
            "model_server_errors_total",
            "Calls to a model server that failed other than by a refused connection (timeouts, "
            "error statuses, answers that do not parse), by error code.",
            ["provider", "server", "code"],
            registry=reg,
        ),
        model_server_capacity_waits_total=Counter(
            "model_server_capacity_waits_total",
            "Jobs that found every server of their provider full and waited.",
            ["provider"],
            registry=reg,
        ),
        model_server_slots_held=Gauge(
            "model_server_slots_held",
            "Slots of a model server held by all workers (its calls in flight), read from "
            "Redis; only servers with a capacity have slots.",
            ["provider", "server"],
            registry=reg,
        ),
        model_server_healthy=Gauge(
            "model_server_healthy",
            "1 while a model server is used; 0 while it is set aside because a worker found "
            "it refusing connections.",
            ["provider", "server"],
            registry=reg,
        ),
        queue_depth=Gauge(
            "queue_depth",
            "Jobs waiting in the queue.",
            registry=reg,
        ),
        oldest_pending_age_seconds=Gauge(
            "oldest_pending_age_seconds",
            "Age of the oldest conversation still waiting for generation.",
            registry=reg,
        ),
        queue_waiting_by_priority=Gauge(
            "queue_waiting_by_priority",
            "Conversations waiting in the queue for a worker (not running), per priority.",
            ["priority"],
            registry=reg,
        ),
        oldest_pending_age_by_priority_seconds=Gauge(
            "oldest_pending_age_by_priority_seconds",
            "Age of the oldest conversation still waiting for generation, per priority.",
            ["priority"],
            registry=reg,
        ),
        workers_alive=Gauge(
            "workers_alive",
            "Workers whose health check is recent.",
            registry=reg,
        ),
    )


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the Prometheus text format: the body and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
