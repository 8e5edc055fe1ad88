from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.queue_status import publish, sample_queue
from shared.metrics import render_metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this API process (text exposition format).

    Queue gauges are sampled at scrape time, so they are as fresh as the scrape.
    """
    state = request.app.state
    publish(
        await sample_queue(state.queue, state.session_factory, state.settings.QUEUE_NAME),
        state.metrics,
    )
    body, content_type = render_metrics(state.metrics.registry)
    return Response(content=body, media_type=content_type)
