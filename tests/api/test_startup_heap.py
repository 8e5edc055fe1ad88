"""What the API built at start-up is out of the collector's full passes while it serves."""

from __future__ import annotations

import gc

from api.main import create_app
from shared.heap import YOUNG_THRESHOLD
from shared.settings import Settings


async def test_the_heap_is_frozen_while_serving_and_thawed_at_shutdown(
    settings: Settings, clean_db: None
) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
