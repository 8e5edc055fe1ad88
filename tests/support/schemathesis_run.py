"""Schemathesis's engine run in-process against an ASGI app, reduced to what a test asserts.

The engine is what `schemathesis run` drives: every phase (examples, coverage, fuzzing,
stateful) and every check, including those that need a run-wide view (object-level
authorization across identities, use after free, resources missing after their creation).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from hypothesis import configuration
from schemathesis import engine
from schemathesis.engine import events
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema


@contextmanager
def served(app: Any) -> Iterator[requests.Session]:
    """The app as schemathesis calls it, with a client for setting up data.

    Schemathesis serves an ASGI app from its own event-loop thread and starts the app's
    lifespan there on the first request, so the app's engine and pools belong to that loop;
    the setup client goes through the same loop. The lifespan is stopped on exit.
    """
    try:
        with asgi.get_client(app) as client:
            yield client
    finally:
        asgi.shutdown_lifespans()


@contextmanager
def hypothesis_home(directory: Path) -> Iterator[None]:
    """Hypothesis keeps caches under `./.hypothesis`; for this run they go to `directory`."""
    configuration.set_hypothesis_home_dir(directory)
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(None)


def identities(path: Path, keys: Mapping[str, str]) -> Path:
    """A Web Fuzzing Commons auth document: one identity per name, sending its bearer key."""
    document = {
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
            for name, key in keys.items()
        ]
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cases: Counter[str] = field(default_factory=Counter)
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [*self.failures, *self.errors]

    def report(self) -> str:
        phases = ", ".join(
            f"{phase} {count} cases in {self.seconds_by_phase.get(phase, 0.0):.1f} s"
            for phase, count in self.cases.items()
        )
        return "\n\n".join([f"{self.seconds:.1f} s: {phases}", *self.problems])


def run(schema: BaseSchema) -> Outcome:
    """Run every configured phase; each distinct failure (check, operation, title) once."""
    outcome = Outcome()
    seen: set[tuple[str, str | None, str]] = set()
    started: dict[str, float] = {}
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.PhaseStarted):
            started[event.phase.name.value] = event.timestamp
        elif isinstance(event, events.PhaseFinished) and event.phase.name.value in started:
            phase = event.phase.name.value
            elapsed = event.timestamp - started.pop(phase)
            outcome.seconds_by_phase[phase] = outcome.seconds_by_phase.get(phase, 0.0) + elapsed
        elif isinstance(event, events.ScenarioFinished):
            outcome.cases[event.phase.value] += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    key = (check.name, failure.operation, failure.title)
                    if key not in seen:
                        seen.add(key)
                        outcome.failures.append(
                            f"[{event.phase.value}] {check.name} on {failure.operation}: "
                            f"{failure.title}\n{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            outcome.errors.append(f"[error] {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            outcome.errors.append(f"[fatal] {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            outcome.seconds = event.running_time
            outcome.failures.extend(f"[after run] {failure!r}" for failure in event.failures)
    return outcome
