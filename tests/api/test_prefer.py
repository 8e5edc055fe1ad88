"""Reading RFC 7240's `Prefer: wait=N` on a submission."""

from __future__ import annotations

import pytest

from api.long_poll import MAX_WAIT_SECONDS, preferred_wait


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=10", 10),
        ("Wait = 3", 3),
        ('wait="7"', 7),
        ("handling=lenient, wait=5", 5),
        (f"wait={MAX_WAIT_SECONDS + 40}", MAX_WAIT_SECONDS),
        ("respond-async, wait=10", 0),
        ("wait=soon", 0),
        ("nowait=3", 0),
        ("", 0),
        (None, 0),
    ],
)
def test_the_preferred_wait_is_read_bounded_and_ignored_when_not_understood(
    header: str | None, seconds: int
) -> None:
    assert preferred_wait(header) == seconds
