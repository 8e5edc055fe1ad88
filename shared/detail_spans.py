"""Detail spans: the client spans of one API request (its SQL statements, Redis commands and
outgoing HTTP calls), exported when the request failed or was slow.

A fast, successful `GET /conversations/{id}` says all there is to say in its server span; its
`SELECT` span would repeat its duration. Making that span costs the SDK more than the rest of
the request's tracing (ids, attribute checks, a context switch, the processors), so inside a
request the client spans are only noted (name, attributes, parent, times) and made into real
spans, with their own start and end times, once the request ends as one worth looking at:
a 5xx, an exception, or at least `TRACE_DETAIL_MIN_MS` long (0: always). Every request keeps
its server span and every span of its own (the enqueue's producer span, whose context the job
carries), so every trace is whole; only the leaves of a fast one are left out.

Outside a request (the worker, scripts, tests) nothing is deferred: the tracers below hand out
the SDK's spans as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager


class _Deferred(Span):
    """A client span noted, not made: what `DetailSpans.keep` makes a real span of.

    It stands in for its parent towards anything asking for the current span context (a log
    line's ids, a propagated header), since the span it becomes has no id yet.
    """

    __slots__ = (
        "_details",
        "_end",
        "_exceptions",
        "_parent",
        "_parent_context",
        "_start",
        "_status",
        "_tracer",
        "attributes",
        "kind",
        "name",
    )

    def __init__(
        self,
        details: DetailSpans,
        tracer: trace.Tracer,
        name: str,
        kind: SpanKind,
        attributes: types.Attributes,
        parent: Context,
        start_time: int | None,
    ) -> None:
        self._details = details
        self._tracer = tracer
        self.name = name
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes or {})
        self._parent = parent
        self._parent_context = trace.get_current_span(parent).get_span_context()
        self._start = start_time or time_ns()
        self._end: int | None = None
        self._status: Status | None = None
        self._exceptions: list[BaseException] = []

    def end(self, end_time: int | None = None) -> None:
        if self._end is None:
            self._end = end_time or time_ns()
            self._details.ended(self)

    def get_span_context(self) -> SpanContext:
        return self._parent_context

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.attributes[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        """Events of client spans are not kept."""

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Links of client spans are not kept."""

    def update_name(self, name: str) -> None:
        self.name = name

    def is_recording(self) -> bool:
        return True

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._exceptions.append(exception)

    def make(self) -> None:
        """The real span, as it would have been."""
        span = self._tracer.start_span(
            self.name,
            context=self._parent,
            kind=self.kind,
            attributes=self.attributes,
            start_time=self._start,
        )
        for exception in self._exceptions:
            span.record_exception(exception)
        if self._status is not None:
            span.set_status(self._status)
        span.end(self._end)


# A long request (an event stream, a long-poll) reads Redis again and again: the first this many
# of its client spans are noted, the rest are not (memory per request stays bounded).
MAX_NOTED = 256


class DetailSpans:
    """The client spans noted during one request, until it is known whether to keep them."""

    __slots__ = ("_decided", "_keep", "_noted")

    def __init__(self) -> None:
        self._noted: list[_Deferred] = []
        self._decided = False
        self._keep = False

    def ended(self, span: _Deferred) -> None:
        if not self._decided:
            if len(self._noted) < MAX_NOTED:
                self._noted.append(span)
        elif self._keep:
            span.make()  # ended after its request (a task it started): as the request went

    def decide(self, *, keep: bool) -> None:
        """Make the noted spans real (`keep`) or drop them; later ones follow suit."""
        self._decided, self._keep = True, keep
        noted, self._noted = self._noted, []
        if keep:
            for span in noted:
                span.make()


_current: ContextVar[DetailSpans | None] = ContextVar("detail_spans", default=None)


def note_details() -> tuple[DetailSpans, Token[DetailSpans | None]]:
    """Note the client spans made from here on (in this context and tasks started from it)."""
    details = DetailSpans()
    return details, _current.set(details)


def stop_noting(token: Token[DetailSpans | None]) -> None:
    _current.reset(token)


class DeferringTracer(trace.Tracer):
    """A tracer whose client spans are noted inside a request (see the module's text)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        details = _current.get()
        if details is None or kind is not SpanKind.CLIENT:
            return self._tracer.start_span(
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        parent = context if context is not None else otel_context.get_current()
        return _Deferred(details, self._tracer, name, kind, attributes, parent, start_time)

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class DeferringTracerProvider(trace.TracerProvider):
    """Hands out `DeferringTracer`s over another provider's tracers (for instrumentations)."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        return DeferringTracer(
            self._provider.get_tracer(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
        )


_preset: ContextVar[tuple[int, int] | None] = ContextVar("preset_span_ids", default=None)


class PresetIds(RandomIdGenerator):
    """The SDK's random ids, except for a span made from one noted earlier under ids handed
    out then (its children already point at them): it gets those ids."""

    def generate_span_id(self) -> int:
        preset = _preset.get()
        return super().generate_span_id() if preset is None else preset[1]

    def generate_trace_id(self) -> int:
        preset = _preset.get()
        return super().generate_trace_id() if preset is None else preset[0]


@contextmanager
def preset_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """Spans started inside get these ids (with a `PresetIds` provider): start one only."""
    token = _preset.set((trace_id, span_id))
    try:
        yield
    finally:
        _preset.reset(token)
