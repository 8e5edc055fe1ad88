"""A Redis primary, its replica and three sentinels on loopback, for failover tests.

The sentinels are `redis-server --sentinel` (what Debian's `redis-sentinel` runs), so the
`redis-server` binary the suite already needs is enough. Failover is fast on purpose: a
primary that does not answer for a second is down.
"""

from __future__ import annotations

import subprocess
from contextlib import suppress
from pathlib import Path

import redis

from tests.support.processes import free_port, wait_until
from tests.support.redis_server import RedisServer

MASTER = "mymaster"


class SentinelCluster:
    def __init__(self, workdir: Path, *, sentinels: int = 3) -> None:
        self.workdir = workdir
        self.primary = RedisServer(workdir)
        self.replica = RedisServer(workdir)
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []
        self._replica_process: subprocess.Popen[bytes] | None = None

    @property
    def sentinels(self) -> str:
        """The value of REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelCluster:
        self.primary.start()
        self._start_replica()
        for port in self.sentinel_ports:
            config = self.workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            with (self.workdir / f"sentinel-{port}.log").open("ab") as log:
                self._sentinels.append(
                    subprocess.Popen(
                        ["redis-server", str(config), "--sentinel"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        wait_until(self._all_see_the_replica, timeout=20, what="sentinels to see the replica")
        return self

    def _start_replica(self) -> None:
        command = ["redis-server", "--port", str(self.replica.port), "--bind", "127.0.0.1"]
        # The replica writes the primary's snapshot to its directory: the run's, not the cwd.
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        command += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        with (self.workdir / f"redis-{self.replica.port}.log").open("ab") as log:
            self._replica_process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = self.replica.client()

        def synced() -> bool:
            with suppress(redis.RedisError):
                return client.info("replication").get("master_link_status") == "up"
            return False

        try:
            wait_until(synced, timeout=10, what="the replica to sync")
        finally:
            client.close()

    def _ask(self, port: int, *command: str) -> object:
        client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def _all_see_the_replica(self) -> bool:
        with suppress(redis.RedisError):
            return all(
                self._ask(port, "SENTINEL", "REPLICAS", MASTER) for port in self.sentinel_ports
            )
        return False

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers tells it."""
        for port in self.sentinel_ports:
            with suppress(redis.RedisError):
                reply = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                if isinstance(reply, list | tuple) and len(reply) == 2:
                    return int(reply[1])
        return None

    def kill_primary(self) -> None:
        """SIGKILL the primary: what it had not yet sent to the replica is gone."""
        self.primary.kill()

    def stop(self) -> None:
        for process in [*self._sentinels, self._replica_process]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.primary.kill()
