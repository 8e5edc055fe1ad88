"""What the worker built at start-up is out of the collector's full passes while it runs."""

from __future__ import annotations

import gc
from typing import Any

from shared.heap import YOUNG_THRESHOLD
from shared.settings import Settings
from tests.support.fake_llm import FakeLLMServer
from worker.arq_worker import build_worker
from worker.observability import Observability


async def test_the_heap_is_frozen_once_ready_and_thawed_at_shutdown(
    worker_settings: Settings, observability: Observability, fake_llm: FakeLLMServer
) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    worker = build_worker(worker_settings, observability, handle_signals=False)
    assert worker.on_startup is not None
    assert worker.on_shutdown is not None
    ctx: dict[str, Any] = {"redis": worker.pool}
    try:
        await worker.on_startup(ctx)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
        await worker.on_shutdown(ctx)
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before
    finally:
        await worker.pool.aclose()
