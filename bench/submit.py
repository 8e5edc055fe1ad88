"""Submissions for the worker measurements, through the API: at a fixed arrival rate
(`submit_at_rate`, open loop, for pickup) or a fixed number as fast as they are answered
(`submit_count`). Both bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.load import Target
from tests.support.auth import bearer

COUNT_LIMIT_SECONDS = 60.0


def _post_body(target: Target, prompt: str) -> dict[str, object]:
    return {
        "user_id": target.user_id,
        "model_version_id": target.model_id,
        "prompt": prompt,
        "max_tokens": 64,
    }


@dataclass
class Submitted:
    ids: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # until the last answer
    send_seconds: float = 0.0  # until the last request was sent


async def _submit_at_rate(target: Target, rate: float, count: int, tag: str) -> Submitted:
    done = Submitted()
    in_flight = asyncio.Semaphore(64)  # bounded, even if the API stalls
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=target.base_url,
        headers=bearer(target.key),
        timeout=10,
        limits=limits,
        trust_env=False,
    ) as client:

        async def one(index: int) -> None:
            try:
                response = await client.post(
                    "/conversations", json=_post_body(target, f"{tag} {index}")
                )
            except httpx.HTTPError as exc:
                done.outcomes[type(exc).__name__] += 1
                return
            finally:
                in_flight.release()
            done.outcomes[f"HTTP {response.status_code}"] += 1
            if response.status_code == 202:
                done.ids.append(response.json()["id"])

        started = time.perf_counter()
        tasks = []
        for index in range(count):
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            await in_flight.acquire()
            tasks.append(asyncio.create_task(one(index)))
        done.send_seconds = time.perf_counter() - started
        await asyncio.gather(*tasks)
        done.seconds = time.perf_counter() - started
    return done


def submit_at_rate(target: Target, *, rate: float, count: int, tag: str) -> Submitted:
    """`count` submissions, the i-th sent at i / rate seconds whatever the earlier ones do."""
    return asyncio.run(_submit_at_rate(target, rate, count, tag))


async def _submit_count(target: Target, count: int, concurrency: int, tag: str) -> Submitted:
    done = Submitted()
    indexes = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=target.base_url,
        headers=bearer(target.key),
        timeout=10,
        limits=limits,
        trust_env=False,
    ) as client:

        async def lane() -> None:
            for index in indexes:
                if time.perf_counter() > deadline:
                    done.outcomes["not sent: time limit"] += 1
                    continue
                try:
                    response = await client.post(
                        "/conversations", json=_post_body(target, f"{tag} {index}")
                    )
                except httpx.HTTPError as exc:
                    done.outcomes[type(exc).__name__] += 1
                    continue
                done.outcomes[f"HTTP {response.status_code}"] += 1
                if response.status_code == 202:
                    done.ids.append(response.json()["id"])

        started = time.perf_counter()
        deadline = started + COUNT_LIMIT_SECONDS
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        done.seconds = time.perf_counter() - started
    return done


def submit_count(target: Target, *, count: int, concurrency: int = 16, tag: str) -> Submitted:
    """`count` submissions from `concurrency` lanes, as fast as they are answered."""
    return asyncio.run(_submit_count(target, count, concurrency, tag))
