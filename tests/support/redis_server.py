"""A throwaway `redis-server` of one's own: emptied, killed and restarted on purpose."""

from __future__ import annotations

import subprocess
from contextlib import suppress
from pathlib import Path

import redis

from tests.support.processes import free_port, wait_until


class RedisServer:
    """A throwaway `redis-server` on a port of its own: nothing on disk, free to kill."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start an empty server and wait until it answers PING."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with (self.workdir / f"redis-{self.port}.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def answers() -> bool:
            with suppress(redis.RedisError):
                return bool(client.ping())
            return False

        try:
            wait_until(answers, timeout=10, what=f"redis-server on port {self.port}")
        finally:
            client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: whatever it held is gone, as after a crash of a Redis without persistence."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)
