"""A client of `GET /conversations/{id}/events` for tests, reading in a thread of its own.

Tests wait on what arrives (`next`, `until`), never on the clock: each wait has a generous
deadline only as a safety net.
"""

from __future__ import annotations

import json
import queue
import threading
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import connect_sse

WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class _Closed:
    """Put on the queue when the server closed the stream (or the request failed)."""


class EventReader:
    """Connects at once and queues every event until the server closes or `close` is called."""

    def __init__(
        self,
        base_url: str,
        conversation_id: str,
        headers: dict[str, str],
        *,
        last_event_id: int | None = None,
    ) -> None:
        self.url = f"{base_url}/conversations/{conversation_id}/events"
        self.headers = dict(headers)
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = str(last_event_id)
        self.status: int | None = None
        self.content_type = ""
        self.error: BaseException | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._events: queue.Queue[Event | _Closed] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._connected.wait(WAIT_SECONDS):
            raise TimeoutError(f"no answer from {self.url}")

    def _run(self) -> None:
        timeout = httpx.Timeout(10.0, read=WAIT_SECONDS)
        try:
            with (
                httpx.Client(timeout=timeout, trust_env=False) as client,
                connect_sse(client, "GET", self.url, headers=self.headers) as source,
            ):
                self._response = source.response
                self.status = source.response.status_code
                self.content_type = source.response.headers.get("content-type", "")
                self._connected.set()
                if self.status != 200:
                    return
                for sse in source.iter_sse():
                    if sse.data:  # a keep-alive comment yields an empty one in httpx-sse
                        self._events.put(Event(sse.event, sse.id, sse.data))
                    if self._stop.is_set():
                        return
        except BaseException as exc:
            if not self._stop.is_set():
                self.error = exc
        finally:
            self._connected.set()
            self._events.put(_Closed())

    def next(self, timeout: float = WAIT_SECONDS) -> Event | None:
        """The next event; None when the server has closed the stream."""
        item = self._events.get(timeout=timeout)
        return None if isinstance(item, _Closed) else item

    def until(self, predicate: Any, timeout: float = WAIT_SECONDS) -> list[Event]:
        """Events up to and including the first that satisfies `predicate`."""
        seen: list[Event] = []
        while True:
            event = self.next(timeout)
            assert event is not None, f"stream closed before the awaited event; got {seen}"
            seen.append(event)
            if predicate(event):
                return seen

    def until_text(self, text: str, timeout: float = WAIT_SECONDS) -> list[Event]:
        """Events until the text they add up to (see `text_of`) is `text`."""
        seen: list[Event] = []
        while text_of(seen) != text:
            event = self.next(timeout)
            assert event is not None, f"stream closed before {text!r}; got {seen}"
            seen.append(event)
        return seen

    def rest(self, timeout: float = WAIT_SECONDS) -> list[Event]:
        """Every event until the server closes the stream; fails if it never does."""
        seen: list[Event] = []
        while (event := self.next(timeout)) is not None:
            seen.append(event)
        assert self.error is None, self.error
        return seen

    def close(self) -> None:
        """Hang up, as a client that goes away does; returns once the reader has stopped."""
        self._stop.set()
        if self._response is not None:
            # Closing under the reader's feet may make it complain; it stops either way.
            with suppress(Exception):
                self._response.close()
        self._thread.join(WAIT_SECONDS)


def deltas(events: list[Event]) -> list[Event]:
    return [e for e in events if e.event == "delta"]


def text_of(events: list[Event]) -> str:
    """The text a client shows: deltas joined, starting over at every `reset`."""
    text = ""
    for event in events:
        if event.event == "reset":
            text = ""
        elif event.event == "delta":
            text += event.json()["text"]
    return text
