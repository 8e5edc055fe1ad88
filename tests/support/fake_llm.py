"""A stand-in LLM server: real HTTP on loopback, speaking enough Ollama and OpenAI.

In-process (pytest)::

    with FakeLLMServer() as llm:
        llm.configure(mode="status", status=503)
        ... point a client at llm.url ...
        assert llm.stats().generation_calls == 1

As a separate process (end-to-end tests with their own worker processes)::

    python -m tests.support.fake_llm --port 0   # prints "FAKE_LLM_LISTENING http://..."
    curl -X POST $URL/_control -d '{"mode": "fail_n_then_ok", "fail_n": 2, "status": 503}'
    curl $URL/_stats ; curl -X POST $URL/_reset

`tests.support.fake_llm_process.FakeLLMProcess` starts and controls that process.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from pydantic import ValidationError

from tests.support.fake_llm_behaviour import (
    GARBAGE,
    Api,
    Behaviour,
    FakeLLMState,
    Stats,
    canonical_model,
    compose_reply,
    error_body,
    finish,
    ollama_final,
    ollama_piece,
    openai_body,
    openai_chunks,
    stream_pieces,
)

READY_PREFIX = "FAKE_LLM_LISTENING "
_GENERATION_ROUTES: dict[str, Api] = {
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
    "/v1/chat/completions": "openai",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of workers must not wait on SYN retries

    def __init__(self, address: tuple[str, int], state: FakeLLMState) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Tracked so stop() can cut idle keep-alive connections instead of leaving threads.
        with self._open_lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (their timeout, our dropped connections) are part of the job.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        with self._open_lock:
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _drip = 0.0  # seconds between the bytes of this call's answer (`drip_seconds`)
    _ticket: int | None = None  # this call's place among the held ones (`hold`)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request would drown pytest's output

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/_stats":
            self._send_json(200, state.stats().to_json())
            return
        state.see(self.path, {k.lower(): v for k, v in self.headers.items()}, None)
        models = state.behaviour.models
        if self.path == "/api/tags":
            tags = [{"name": m, "model": m, "size": 0, "digest": "fake"} for m in models]
            self._send_json(200, {"models": tags})
        elif self.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]
            self._send_json(200, {"object": "list", "data": data})
        elif self.path == "/":
            self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        else:
            self._send_json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        body = self._read_json()
        if body is None:
            return
        state = self.server.state
        if self.path == "/_reset":
            state.reset()
            self._send_json(200, {"reset": True})
        elif self.path == "/_control":
            try:
                behaviour = state.configure(**body)
            except ValidationError as exc:
                self._send_json(400, {"error": str(exc)})
            else:
                self._send_json(200, behaviour.model_dump(mode="json"))
        elif self.path in _GENERATION_ROUTES:
            state.see(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            state.call_started()
            try:
                self._generate(_GENERATION_ROUTES[self.path], body)
            finally:
                state.call_ended()
        else:
            self._send_json(404, {"error": f"no route {self.path}"})

    def _generate(self, api: Api, body: dict[str, Any]) -> None:
        started = time.perf_counter_ns()
        model = str(body.get("model", ""))
        if api == "ollama_generate":
            prompt = str(body.get("prompt", ""))
            inputs = [str(body.get("system", "")), prompt]
        else:
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            inputs = [str(m.get("content", "")) for m in messages]
            users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
            prompt = users[-1] if users else ""
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        limit = body.get("max_tokens") if api == "openai" else options.get("num_predict")

        decision = self.server.state.begin_call(prompt=prompt, model=model)
        b = decision.behaviour
        self._ticket = self.server.state.take_ticket() if b.hold else None
        if b.hold and not b.hold_after_pieces and not self._wait_released():
            return
        delay = b.delay_seconds or (1.0 if b.mode == "slow" else 0.0)
        if delay and self.server.stopping.wait(delay):
            return
        self._drip = b.drip_seconds
        if decision.fail_status is not None:
            text = b.error or (
                f"model '{model}' not found"
                if decision.fail_status == 404
                else f"fake failure (HTTP {decision.fail_status})"
            )
            self._send_json(decision.fail_status, error_body(api, decision.fail_status, text))
            return
        # Ollama streams unless told not to; OpenAI only when asked.
        stream = body.get("stream")
        streamed = stream is True if api == "openai" else stream is not False
        # A line that is not JSON half-way through a stream (a whole answer is all garbage).
        spoil = b.mode == "garbage_mid_stream"
        if b.mode == "garbage" or (spoil and not streamed):
            self._send(200, GARBAGE, "application/json")
            return
        known = {canonical_model(m) for m in b.models}
        if b.strict_models and canonical_model(model) not in known:
            self._send_json(404, error_body(api, 404, f"model '{model}' not found"))
            return
        reply = compose_reply(b, prompt=prompt, inputs=inputs, limit=limit)
        duration_ns = time.perf_counter_ns() - started
        drop = b.mode == "close_mid_stream"
        # A held stream pauses before the piece after `hold_after_pieces` of them.
        pause = b.hold_after_pieces if b.hold and b.hold_after_pieces else None
        if api == "openai" and streamed:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            chunks = openai_chunks(model, reply, include_usage=usage)
            chunks[-1] = finish(chunks[-1], b)
            lines = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
            lines.append(b"data: [DONE]\n\n")
            if spoil:
                lines.insert(len(lines) // 2, b"data: " + GARBAGE + b"\n\n")
            # The first chunk carries only the role: the pieces start at the second.
            self._stream(lines, "text/event-stream", drop=drop, pause=pause and pause + 1)
        elif not streamed and pause is not None and not self._wait_released():
            return  # a whole answer has no pieces to pause between: it is held before it
        elif api == "openai":
            self._send_json(200, finish(openai_body(model, reply), b), drop=drop)
        elif not streamed:
            whole = {**ollama_piece(api, model, reply.text), **ollama_final(reply, duration_ns)}
            self._send_json(200, finish(whole, b), drop=drop)
        else:
            chunks = [ollama_piece(api, model, p) for p in stream_pieces(reply.text)]
            final = {**ollama_piece(api, model, ""), **ollama_final(reply, duration_ns)}
            lines = [json.dumps(c).encode() + b"\n" for c in [*chunks, finish(final, b)]]
            if spoil:
                lines.insert(len(lines) // 2, GARBAGE + b"\n")
            self._stream(lines, "application/x-ndjson", drop=drop, pause=pause)

    def _read_json(self) -> dict[str, Any] | None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_json(400, {"error": "request body must be a JSON object"})
            return None
        return body

    def _send(self, status: int, data: bytes, content_type: str, *, drop: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if drop:
            # Promise the whole body, send half of it, hang up: a truncated response.
            self.wfile.write(data[: len(data) // 2])
            self._hang_up()
            return
        if self._drip:
            for index in range(len(data)):
                if self.server.stopping.wait(self._drip):
                    return
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
            return
        self.wfile.write(data)

    def _send_json(self, status: int, payload: dict[str, Any], *, drop: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", drop=drop)

    def _stream(
        self, lines: list[bytes], content_type: str, *, drop: bool, pause: int | None
    ) -> None:
        """Send `lines` as one chunked body, each flushed as it goes (dripped byte by byte with
        `drip_seconds`); `drop` hangs up half-way, `pause` waits for a release before that
        line."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, line in enumerate(lines):
            if drop and index >= max(len(lines) // 2, 1):
                self._hang_up()
                return
            if index == pause and not self._wait_released():
                return
            size = f"{len(line):X}\r\n".encode()
            if not self._drip:
                # One write (one segment on the wire) per chunk: size line, data and CRLF.
                self.wfile.write(b"".join((size, line, b"\r\n")))
                continue
            self.wfile.write(size)
            for part in self._dripped(line):
                if part is None:
                    return
                self.wfile.write(part)
                self.wfile.flush()
            self.wfile.write(b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _dripped(self, data: bytes) -> Iterator[bytes | None]:
        """`data` at once, or byte by byte `drip_seconds` apart (None: the server is stopping)."""
        if not self._drip:
            yield data
            return
        for index in range(len(data)):
            if self.server.stopping.wait(self._drip):
                yield None
                return
            yield data[index : index + 1]

    def _wait_released(self) -> bool:
        """Wait until this held call is released; False when the server stops first, or the
        client closes the connection meanwhile (counted: the caller aborted the generation)."""
        assert self._ticket is not None
        while not self.server.state.wait_released(self._ticket, 0.05):
            if self.server.stopping.is_set():
                return False
            if self._client_left():
                self.server.state.client_hung_up()
                return False
        return True

    def _client_left(self) -> bool:
        """Whether the client closed its end: readable, with nothing left to read."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _hang_up(self) -> None:
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FakeLLMServer:
    """The stand-in in a background thread; the port is bound as soon as it is made."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = FakeLLMState()
        self._server = _Server((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeLLMServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake delayed answers, stop serving, cut open connections, release the port."""
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self._server.cut_connections()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configure(self, **changes: Any) -> Behaviour:
        """Merge `changes` (fields of `Behaviour`) into the running behaviour."""
        return self.state.configure(**changes)

    def reset(self) -> None:
        """Default behaviour and zero counters."""
        self.state.reset()

    def release(self, count: int = 1) -> None:
        """Let the oldest `count` calls held by `hold=True` answer; `hold=False` frees all."""
        self.state.release(count)

    def stats(self) -> Stats:
        """Calls so far and the last request seen."""
        return self.state.stats()


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in until SIGTERM/SIGINT; the first stdout line gives its URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", default="{}", help="initial Behaviour fields, as JSON")
    args = parser.parse_args(argv)
    server = FakeLLMServer(args.host, args.port)
    server.configure(**json.loads(args.config))
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    sys.stdout.write(f"{READY_PREFIX}{server.url}\n")
    sys.stdout.flush()
    while not done.wait(0.5):
        pass
    server.stop()


if __name__ == "__main__":
    main()
