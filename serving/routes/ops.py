"""What operators and probes ask for: health, Prometheus metrics. No key needed."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import MetricsDep, SettingsDep, StoreDep
from serving.schemas import ComponentOut, HealthResponse

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_model=str, summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(app_metrics: MetricsDep, settings: SettingsDep) -> Response:
    return Response(app_metrics.exposition(settings), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/healthz",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "A component cannot be read"}},
    summary="Component checks; 200 also when there is no data yet (status says so)",
)
def healthz(store: StoreDep, response: Response) -> HealthResponse:
    components = {
        name: ComponentOut(status=c.status, detail=c.detail) for name, c in store.health().items()
    }
    states = {c.status for c in components.values()}
    status = "error" if "error" in states else "empty" if "empty" in states else "ok"
    if status == "error":
        response.status_code = 503
    return HealthResponse(status=status, components=components, worker=os.getpid())


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/docs")
