from __future__ import annotations

from fastapi import APIRouter, Request, Response

from shared.metrics import render_metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this API process (text exposition format)."""
    body, content_type = render_metrics(request.app.state.metrics.registry)
    return Response(content=body, media_type=content_type)
