"""When to try a transient failure again."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(cap, base * 2^(attempt-1))].

    Full jitter spreads the retries of many conversations that failed together (an Ollama
    restart) instead of sending them back in one wave; the floor keeps a retry from being
    immediate.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    floor = min(base / 2, ceiling)
    return (rng or random).uniform(floor, ceiling)
