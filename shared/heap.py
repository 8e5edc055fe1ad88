"""Start-up's objects kept out of the garbage collector's full passes.

A service builds most of what it keeps at start-up: modules, classes, SQLAlchemy and pydantic
metadata, pools, clients. CPython's full collection visits every tracked object each time it
runs, and under load it runs every few seconds, each pass pausing the event loop for tens of
milliseconds (55 ms measured in the API): a whole tail of requests waits on it. `gc.freeze()`
moves what exists into a permanent generation no pass visits; what requests make is still
collected as before. Thawed at shutdown, so a process that starts and stops many services (a
test run) keeps nothing of theirs for good.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once start-up has built what the process keeps."""
    gc.freeze()


def thaw_heap() -> None:
    """Call at shutdown: what was frozen can be collected again."""
    gc.unfreeze()
