"""A tracer provider of the test's own, exporting to memory (never the process's global)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import Telemetry, setup_telemetry
from tests.support.log_capture import make_settings


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    built = setup_telemetry(
        make_settings(), process_name="worker", span_exporter=exporter, set_global=False
    )
    yield built
    built.shutdown()
