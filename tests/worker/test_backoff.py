"""Backoff for transient failures: full jitter between a floor and a capped exponential."""

from __future__ import annotations

import random

import pytest

from worker.backoff import retry_delay


class _Bounds(random.Random):
    """Answers `uniform(a, b)` with the bound it is told to, and remembers the range asked."""

    def __init__(self, pick: str) -> None:
        super().__init__(0)
        self.pick = pick
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return a if self.pick == "low" else b


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "floor", "ceiling"),
    [
        (1, 2.0, 60.0, 1.0, 2.0),  # the first retry: between base/2 and base
        (2, 2.0, 60.0, 1.0, 4.0),
        (3, 2.0, 60.0, 1.0, 8.0),
        (6, 2.0, 60.0, 1.0, 60.0),  # 64 s capped at 60
        (40, 2.0, 60.0, 1.0, 60.0),  # far past the cap: no overflow, still the cap
        (0, 2.0, 60.0, 1.0, 2.0),  # never below the first retry's range
        (1, 10.0, 3.0, 3.0, 3.0),  # a cap below the base wins over the floor too
        (3, 0.05, 0.2, 0.025, 0.2),  # the worker tests' settings
    ],
)
def test_the_delay_lies_between_the_floor_and_the_capped_exponential(
    attempt: int, base: float, cap: float, floor: float, ceiling: float
) -> None:
    for pick in ("low", "high"):
        rng = _Bounds(pick)
        delay = retry_delay(attempt, base=base, cap=cap, rng=rng)
        assert rng.asked == [(floor, ceiling)]
        assert delay == (floor if pick == "low" else ceiling)


def test_delays_are_spread_over_the_whole_range() -> None:
    """Full jitter: retries of conversations that failed together do not come back at once."""
    rng = random.Random(12)
    delays = [retry_delay(4, base=2.0, cap=60.0, rng=rng) for _ in range(500)]
    assert all(1.0 <= d <= 16.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 450
    assert min(delays) < 2.0
    assert max(delays) > 15.0


def test_the_module_random_is_used_without_an_rng() -> None:
    random.seed(7)
    first = retry_delay(3, base=2.0, cap=60.0)
    random.seed(7)
    assert retry_delay(3, base=2.0, cap=60.0) == first
    assert 1.0 <= first <= 8.0
