"""`python -m worker` runs one worker; `python -m worker --check` probes the heartbeat."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

from arq.worker import Worker
from loguru import logger
from redis.exceptions import RedisError

from shared.logs import configure_logging
from shared.metrics import create_metrics
from shared.queue import create_queue_pool, live_workers
from shared.settings import Settings, SettingsError, load_settings
from shared.telemetry import instrument_redis, setup_telemetry
from worker.arq_worker import build_worker
from worker.context import PROCESS_NAME
from worker.metrics_server import MetricsServer, start_metrics_server
from worker.observability import Observability

MAX_RESTART_DELAY = 30.0


async def _close_quietly(worker: Worker) -> None:
    try:
        await worker.close()
    except (RedisError, OSError) as exc:
        logger.warning("worker_close_incomplete", error=type(exc).__name__)
        # arq gives up at its first failed Redis call, before on_shutdown: close what this
        # worker opened anyway (once its jobs are done), or every Redis outage would leak a
        # database pool and an HTTP client.
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
        with suppress(RedisError, OSError):
            await worker.pool.connection_pool.disconnect()


async def _start_metrics(settings: Settings, obs: Observability) -> MetricsServer | None:
    try:
        server = await start_metrics_server(
            obs.metrics.registry, settings.WORKER_METRICS_HOST, settings.WORKER_METRICS_PORT
        )
    except OSError as exc:
        # Two workers on one host cannot share a port; the second still does its real job.
        logger.warning("metrics_server_unavailable", error=str(exc))
        return None
    return server


async def serve(settings: Settings) -> None:
    """Run the arq worker, starting it again whenever it loses Redis, until a stop signal."""
    telemetry = setup_telemetry(settings, process_name=PROCESS_NAME)
    instrument_redis(telemetry.tracer_provider)
    obs = Observability(telemetry=telemetry, metrics=create_metrics())
    metrics_server = await _start_metrics(settings, obs)
    delay = 1.0
    stopping = asyncio.Event()
    try:
        while True:
            worker = build_worker(settings, obs)
            worker.on_stop = lambda _sig: stopping.set()
            try:
                await worker.async_run()
            except asyncio.CancelledError:
                if not stopping.is_set():
                    raise
            except (RedisError, OSError) as exc:
                if worker.reached_redis:
                    # It had been up: this is a new outage, not the next failed restart.
                    delay = 1.0
                logger.error("worker_lost_redis", error=type(exc).__name__, restart_in=delay)
            finally:
                await _close_quietly(worker)
            if stopping.is_set():
                logger.info("worker_stopped")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)
    finally:
        if metrics_server is not None:
            await metrics_server.stop()
        telemetry.shutdown()


async def heartbeat_alive(settings: Settings) -> bool:
    """True when a worker on this host (this container) refreshed its heartbeat recently."""
    pool = create_queue_pool(settings)
    try:
        return await live_workers(pool, settings.QUEUE_NAME, host=socket.gethostname()) > 0
    except (RedisError, OSError):
        return False
    finally:
        await pool.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 0 if a worker is alive")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - logging is not set up without settings
        return 2
    if args.check:
        return 0 if asyncio.run(heartbeat_alive(settings)) else 1
    configure_logging(settings, process_name=PROCESS_NAME)
    _run(serve(settings))
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop where it is installed (with uvicorn, as the API runs): the worker's event loop
    carries every job's I/O, and uvloop's costs less CPU per callback than asyncio's."""
    try:
        import uvloop  # optional: not on every platform
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
