"""A throwaway PgBouncer in transaction mode in front of the local PostgreSQL.

Debian's `pgbouncer` package provides the binary (`.ci/run` installs it). PgBouncer refuses
to run as root, so under root it runs as the `postgres` user, from a directory that user can
read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path

from sqlalchemy.engine import URL

from tests.support.processes import free_port, wait_until

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((p for p in BINARY_PATHS if Path(p).exists()), None)


class PgBouncer:
    """Transaction pooling, few server connections: every transaction may land on another."""

    def __init__(self, upstream: URL, *, server_connections: int = 4) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.server_connections = server_connections
        self.workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: URL) -> URL:
        """`database` reached through this pooler."""
        return database.set(host="127.0.0.1", port=self.port)

    def start(self) -> PgBouncer:
        executable = binary()
        if executable is None:
            raise RuntimeError("pgbouncer is not installed (Debian package pgbouncer)")
        user = self.upstream.username or "postgres"
        (self.workdir / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.workdir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.upstream.host or '127.0.0.1'} port={self.upstream.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.workdir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.server_connections}\nmax_client_conn = 500\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
            f"pidfile = {self.workdir / 'pgbouncer.pid'}\n"
        )
        run_as = None
        if os.geteuid() == 0:
            run_as = "postgres"
            os.chmod(self.workdir, 0o777)
            for path in self.workdir.iterdir():
                os.chmod(path, 0o666)
        self._process = subprocess.Popen(
            [executable, str(self.workdir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            user=run_as,
        )

        def listening() -> bool:
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            return False

        wait_until(listening, timeout=10, what=f"pgbouncer on port {self.port}")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
