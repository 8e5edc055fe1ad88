"""A webhook receiver on loopback for tests: records every request, answers as told."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


# An answer that never comes in time: the handler waits until the receiver is closed.
HANG = 0


class WebhookReceiver:
    """Answers each request with the next status of `answers` (then 200), recording it;
    `HANG` holds the answer back until the receiver is closed."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._answers: dict[str, list[int]] = {}
        self.closing = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, path: str, statuses: list[int]) -> None:
        with self._lock:
            self._answers[path] = list(statuses)

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.path == path]

    def _handle(self, request: Received) -> int:
        with self._lock:
            self._received.append(request)
            queued = self._answers.get(request.path)
            return queued.pop(0) if queued else 200


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    holder: list[WebhookReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = holder[0]._handle(Received(self.path, headers, body))
            if status == HANG:
                holder[0].closing.wait(timeout=60)
                status = 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(server)
    holder.append(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.closing.set()
        server.shutdown()
        server.server_close()
