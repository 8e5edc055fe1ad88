"""`python -m worker` runs one worker; `python -m worker --check` probes the heartbeat."""

from __future__ import annotations

import argparse
import asyncio
import sys

from arq.worker import Worker
from loguru import logger
from redis.exceptions import RedisError

from shared.queue import create_queue_pool
from shared.settings import Settings, SettingsError, load_settings
from worker.settings import build_worker

MAX_RESTART_DELAY = 30.0


async def _close_quietly(worker: Worker) -> None:
    try:
        await worker.close()
    except (RedisError, OSError) as exc:
        logger.warning("worker_close_incomplete", error=type(exc).__name__)


async def serve(settings: Settings) -> None:
    """Run the arq worker, starting it again whenever it loses Redis, until a stop signal."""
    delay = 1.0
    stopping = asyncio.Event()
    while True:
        worker = build_worker(settings)
        worker.on_stop = lambda _sig: stopping.set()
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            if not stopping.is_set():
                raise
        except (RedisError, OSError) as exc:
            logger.error("worker_lost_redis", error=type(exc).__name__, restart_in=delay)
        finally:
            await _close_quietly(worker)
        if stopping.is_set():
            logger.info("worker_stopped")
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RESTART_DELAY)


async def heartbeat_alive(settings: Settings) -> bool:
    """True when some worker on this queue refreshed its heartbeat recently."""
    pool = create_queue_pool(settings)
    try:
        return bool(await pool.exists(f"{settings.QUEUE_NAME}:health-check"))
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
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
