"""`python -m bench.streaming`: what publishing the text costs a generation job.

The same job, with and without publishing, on the real worker code (`run_generation`) in this
process: a throwaway migrated PostgreSQL database, the local Redis, and the stand-in LLM
answering at once (a 0 s model, in a process of its own) with a reply of `--words` words, so
the job is nothing but its own overhead: claim, the streamed call, publishing, the fenced
write-back. The model streams in both cases; "off" writes nothing to Redis (no deltas, no
end mark), its pieces go nowhere.

Rounds alternate off and on so that drift on a shared machine falls on both. Reported per
mode: each job's wall time (p50, p95, mean), the time the attempt waits for the last pieces
to reach the stream before its write-back (`finish`) and for the end mark after it (`end`),
the Redis entries per job, and the throughput of `--concurrency` jobs at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from bench.load import percentile
from shared.db import create_engine, create_session_factory
from shared.logs import configure_logging
from shared.metrics import create_metrics
from shared.settings import LogFormat, Settings
from shared.stream_events import events_key
from shared.telemetry import setup_telemetry
from tests.factories import make_conversation
from tests.support.database import migrated_database
from tests.support.fake_llm_process import FakeLLMProcess
from worker import delta_publisher
from worker.context import open_resources
from worker.generation import JobResult, run_generation
from worker.observability import Observability

MODES = ("off", "on")


class _Timer:
    """Seconds spent in one awaited method, per call."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def wrap(self, method: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def timed(publisher: Any) -> None:
            started = time.perf_counter()
            try:
                await method(publisher)
            finally:
                self.seconds.append(time.perf_counter() - started)

        return timed


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return (
        f"p50 {percentile(ordered, 50) * 1000:.2f} ms, p95 {percentile(ordered, 95) * 1000:.2f} "
        f"ms, mean {statistics.fmean(ordered) * 1000:.2f} ms"
    )


async def _measure(args: argparse.Namespace, database_url: str, llm: FakeLLMProcess) -> None:
    queue_name = f"bench-streaming:{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        QUEUE_NAME=queue_name,
        OLLAMA_BASE_URL=llm.url,  # type: ignore[arg-type]
        OLLAMA_STARTUP_CHECK_ENABLED=False,
        LOG_FORMAT=LogFormat.HUMAN,
        LOG_LEVEL="ERROR",
        EVENTS_FLUSH_INTERVAL_MS=args.flush_ms,
    )
    configure_logging(settings, process_name="bench")
    telemetry = setup_telemetry(settings, process_name="worker", set_global=False)
    obs = Observability(telemetry=telemetry, metrics=create_metrics(process_metrics=False))
    res = await open_resources(settings, obs)
    writer = res.events
    engine = create_engine(settings, process_name="bench")
    session_factory = create_session_factory(engine)
    redis = Redis.from_url(args.redis_url)
    timers = {mode: {"finish": _Timer(), "end": _Timer()} for mode in MODES}
    jobs: dict[str, list[float]] = {mode: [] for mode in MODES}
    throughput: dict[str, list[float]] = {mode: [] for mode in MODES}
    entries: list[int] = []
    original = (delta_publisher.DeltaPublisher.finish, delta_publisher.DeltaPublisher.end)
    llm.configure(reply=" ".join(f"word{i}" for i in range(args.words)))
    try:

        async def pending(count: int) -> list[uuid.UUID]:
            return [await make_conversation(session_factory, prompt="p") for _ in range(count)]

        async def one(cid: uuid.UUID, mode: str) -> None:
            started = time.perf_counter()
            result = await run_generation(res, cid)
            jobs[mode].append(time.perf_counter() - started)
            if result is not JobResult.COMPLETED:
                raise RuntimeError(f"job ended {result}")

        for _ in range(args.warmup):
            res.events = writer
            for cid in await pending(5):
                await one(cid, "on")
        jobs["on"].clear()

        for round_number in range(args.rounds):
            for mode in MODES if round_number % 2 == 0 else reversed(MODES):
                res.events = writer if mode == "on" else None
                timer = timers[mode]
                delta_publisher.DeltaPublisher.finish = timer["finish"].wrap(original[0])  # type: ignore[method-assign]
                delta_publisher.DeltaPublisher.end = timer["end"].wrap(original[1])  # type: ignore[method-assign]
                # One job at a time: the cost per job.
                ids = await pending(args.jobs)
                for cid in ids:
                    await one(cid, mode)
                delta_publisher.DeltaPublisher.finish, delta_publisher.DeltaPublisher.end = original  # type: ignore[method-assign]
                if mode == "on":
                    for cid in ids:
                        entries.append(int(await redis.xlen(events_key(queue_name, cid))))
                # `concurrency` at once: throughput as a worker runs them.
                batch = await pending(args.concurrency * 4)
                started = time.perf_counter()
                for chunk in range(0, len(batch), args.concurrency):
                    part = batch[chunk : chunk + args.concurrency]
                    await asyncio.gather(*(run_generation(res, cid) for cid in part))
                throughput[mode].append(len(batch) / (time.perf_counter() - started))
    finally:
        delta_publisher.DeltaPublisher.finish, delta_publisher.DeltaPublisher.end = original  # type: ignore[method-assign]
        res.events = writer
        async for key in redis.scan_iter(match=f"{queue_name}:*"):
            await redis.delete(key)
        await redis.aclose()
        await res.close()
        await engine.dispose()
        telemetry.shutdown()

    print(
        f"{args.rounds} rounds of {args.jobs} jobs per mode, {args.words}-word replies "
        f"({args.words} pieces), flush interval {settings.EVENTS_FLUSH_INTERVAL_MS} ms\n"
    )
    for mode in MODES:
        print(f"publishing {mode}:")
        print(f"  job wall time          {_ms(jobs[mode])}")
        if mode == "on":
            print(f"  finish (before write)  {_ms(timers[mode]['finish'].seconds)}")
            print(f"  end (after write)      {_ms(timers[mode]['end'].seconds)}")
            print(f"  stream entries per job {statistics.fmean(entries):.1f}")
        rates = throughput[mode]
        print(
            f"  {args.concurrency} at once            {statistics.median(rates):.0f} jobs/s "
            f"(median of {len(rates)} rounds)"
        )
    off, on = statistics.median(jobs["off"]), statistics.median(jobs["on"])
    print(f"\nmedian job: +{(on - off) * 1000:.2f} ms with publishing ({on / off:.2f}x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=50, help="sequential jobs per round and mode")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--flush-ms", type=int, default=50, help="EVENTS_FLUSH_INTERVAL_MS (0: every piece at once)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    # The stand-in in a process of its own: in this one its thread would compete for the GIL.
    with migrated_database() as url, FakeLLMProcess() as llm:
        asyncio.run(_measure(args, url.render_as_string(hide_password=False), llm))


if __name__ == "__main__":
    main()
