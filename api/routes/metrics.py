from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import MetricsDep, QueueDep, SessionFactoryDep, SettingsDep
from api.queue_status import publish, publish_servers, sample_queue, sample_servers
from shared.metrics import render_metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(
    metrics: MetricsDep,
    queue: QueueDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Response:
    """Prometheus metrics of this API process (text exposition format).

    Queue and model-server gauges are sampled at scrape time, so they are as fresh as the
    scrape.
    """
    publish(await sample_queue(queue, session_factory, settings.QUEUE_NAME), metrics)
    publish_servers(await sample_servers(queue, settings), metrics)
    body, content_type = render_metrics(metrics.registry)
    return Response(content=body, media_type=content_type)
