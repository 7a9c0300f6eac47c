"""The API's Prometheus metrics: requests per route (``RequestMetrics``, a plain ASGI
middleware) and the app's own (``ServingMetrics``: data freshness, WebSocket clients, the
model being served), all in the app's own registry.

The request metrics' names and labels are those of prometheus-fastapi-instrumentator
(``http_requests_total`` and ``http_request_duration_seconds`` by handler, method and status),
so dashboards built for it work. It replaced that library on the hot path: the library builds a Starlette Request,
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
import time
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tickcast.core.settings import Settings
    from tickcast.scoring.live_predictions import LivePredictions

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


FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


class ServingMetrics:
    """What the API serves, as metrics: how old the data behind each answered prediction is,
    what is held in memory, who listens, which model made the newest prediction."""

    def __init__(self, registry: CollectorRegistry, live: LivePredictions):
        self.registry = registry
        self.live = live
        self.freshness = Histogram(
            "tickcast_prediction_data_freshness_seconds",
            "Age of the data behind each prediction served (now - data_timestamp)",
            buckets=FRESHNESS_BUCKETS, registry=registry,
        )
        Gauge("tickcast_websocket_clients", "Connected WebSocket clients", registry=registry).set_function(
            lambda: len(live.clients))
        Gauge("tickcast_predictions_symbols", "Symbols with a latest prediction in memory",
              registry=registry).set_function(lambda: len(live.latest))
        Gauge("tickcast_prediction_newest_data_age_seconds",
              "Seconds since the newest data behind any held prediction", registry=registry).set_function(
            lambda: time.time() - max((e.data_timestamp for e in live.latest.values()), default=time.time()))
        self.model_info = Gauge("tickcast_serving_model_info", "The model of the newest prediction held (value 1)",
                                ["model_name", "model_version"], registry=registry)
        self._shown_model: tuple[str, str] | None = None

    def note_model(self) -> None:
        """Point the model info gauge at the newest prediction's model (called after each refresh)."""
        current = self.live.last_model
        if current is not None and current != self._shown_model:
            if self._shown_model is not None:
                self.model_info.remove(*self._shown_model)
            self.model_info.labels(*current).set(1)
            self._shown_model = current

    def exposition(self, settings: Settings) -> bytes:
        """The text of /metrics: this process's registry, or every worker's merged."""
        exposed = self.registry
        directory = merged_metrics_dir(settings)
        if directory is not None:
            from prometheus_client import multiprocess

            exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(exposed, path=str(directory))
        return generate_latest(exposed)
