"""Request metrics per route, as a plain ASGI middleware.

The names and labels are those of prometheus-fastapi-instrumentator (``http_requests_total``
and ``http_request_duration_seconds`` by handler, method and status), so dashboards built for
it work. It replaced that library on the hot path: the library builds a Starlette Request,
a Response and an info object and scans the routes for every request, which cost a
GET of one prediction about a third of its time (``bench/api.py``). Here the route template
is the one Starlette's router leaves in the scope, and two metric children are cached per
(handler, method, status).

Failed requests (status >= 400) are logged in one line each: with uvicorn's access log off
(the default, ``TICKCAST_API_ACCESS_LOG``), they are what an operator looks for.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.serving.access")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestMetrics:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry, excluded: frozenset[str] = frozenset()):
        self.app = app
        self.excluded = excluded
        self.requests = Counter("http_requests_total", "Requests by route template, method and status",
                                ["handler", "method", "status"], registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Time to the end of the response body",
                                 ["handler", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # what the client gets if the app raises before it responds

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label: made-up URLs must not grow the label set.
            handler = getattr(route, "path", None) or "none"
            if handler not in self.excluded:
                self._observe(handler, scope["method"], status, perf_counter() - started)
            if status >= 400:
                log.info("%s %s -> %d (%.1f ms)", scope["method"], scope["path"], status,
                         (perf_counter() - started) * 1000)

    def _observe(self, handler: str, method: str, status: int, seconds: float) -> None:
        key = (handler, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(handler, method, str(status)),
                                               self.latency.labels(handler, method))
        children[0].inc()
        children[1].observe(seconds)


def workers_metrics_dir(settings: Settings) -> Path:
    """Where ``tickcast serve api`` has its workers write their metrics to be merged."""
    return settings.run_dir / "prometheus-api"


def merged_metrics_dir(settings: Settings) -> Path | None:
    """The directory to merge every worker's metrics from, or None for this process's own.

    Merged only when the settings say there are several workers and this process was started
    by ``tickcast serve api`` writing to ``workers_metrics_dir`` (prometheus_client takes that
    directory from PROMETHEUS_MULTIPROC_DIR). The variable alone decides nothing: importing
    Feast points it at a temp directory of its own in any process, which holds none of ours.
    """
    directory = workers_metrics_dir(settings)
    if settings.api_workers > 1 and os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(directory):
        return directory
    return None
