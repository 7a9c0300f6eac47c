"""The scoring API: latest predictions, on-demand scoring, history, explanations, models,
and a WebSocket push of every new prediction.

``create_app(settings)`` builds it; ``tickcast serve api`` hands uvicorn that factory with
the settings it loaded. The routes are in ``serving.routes`` (one module per resource), the
work behind them in the services of ``tickcast`` (``tickcast.scoring.on_demand``,
``tickcast.models.listing``, ``tickcast.catalog``); this module wires them together: the
shared objects on ``app.state``, the error handlers and the three ASGI layers in front (request
metrics, the body's bounds of ``serving.bounds``, the hot path).

The hot routes (one or many latest predictions) are ``async`` and read an in-memory copy of
the latest predictions, kept current from the Kafka ``predictions`` topic (or, as a fallback,
by polling the online store; ``tickcast.scoring.live_predictions``); they send the stored JSON
as it is, with the freshness and the staleness appended (``serving.latest``). History and bars
read Delta in a small pool of processes (``serving.offload``); the other routes that do file IO
or model work are plain ``def``, which FastAPI runs in its thread pool.
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from serving.bounds import BodyLimit, ExpensiveSlots
from serving.docs import install_docs
from serving.errors import install_error_handlers
from serving.hot import HotReads
from serving.latest import LatestPredictions
from serving.metrics import RequestMetrics, ServingMetrics
from serving.offload import OffloadPool
from serving.routes import (
    API_PREFIX,
    alerts,
    bars,
    explanations,
    models,
    ops,
    predictions,
    scoring,
    symbols,
    ws,
)
from serving.security import API_KEY_HEADER, Guard
from tickcast.catalog.market import MarketStore
from tickcast.core.settings import Settings
from tickcast.scoring.live_predictions import LivePredictions
from tickcast.scoring.models import ModelLoader
from tickcast.scoring.on_demand import OnDemandScorer

try:
    _VERSION = version("tickcast")
except PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0+unknown"

# In the order the OpenAPI document lists their paths.
ROUTERS = (predictions.router, scoring.router, explanations.router, models.router, symbols.router,
           bars.router, alerts.router, ops.router, ws.router)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    app.state.live.start()
    await app.state.offload.start()
    # Everything built so far (modules, the app, the latest predictions) lives as long as the
    # process: out of the collector's way, a full collection triggered by the garbage of an
    # expensive request (history's thousands of rows) no longer scans it, on the event loop's time.
    gc.freeze()
    yield
    await app.state.offload.stop()
    await app.state.live.stop()
    if getattr(app.state, "alert_store", None) is not None:
        app.state.alert_store.close()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="TickCast API",
        version=_VERSION,
        lifespan=_lifespan,
        # Swagger UI and ReDoc from local files (serving/docs.py), not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
        description=(
            "Short-horizon predictions per symbol from the champion LSTM and Transformer: the latest "
            "ones (one or thousands at once), on-demand scoring, history, explanations, the models "
            "behind them, and a WebSocket push of every new prediction (`/ws/predictions`). Every route "
            f"except /healthz, /metrics and the docs needs an API key in the `{API_KEY_HEADER}` header."
        ),
        openapi_tags=[
            {"name": "predictions", "description": "Latest, batch, history and explanations (SPEC.md contract)"},
            {"name": "scoring", "description": "Score now with the champion or a named model version"},
            {"name": "models", "description": "Registered models and their walk-forward metrics"},
            {"name": "symbols", "description": "What can be asked for"},
            {"name": "bars", "description": "OHLCV bars from Delta bars_1d / bars_1m"},
            {"name": "alerts", "description": "Alert rules (admin scope) and the alerts sent (read scope)"},
            {"name": "ops", "description": "Health and Prometheus metrics"},
        ],
    )
    store = MarketStore(settings)
    live = LivePredictions(store.online, settings.api_poll_seconds, settings)
    # One registry per app: tests build several apps in one process, and the default
    # global registry refuses a second set of the same metric names.
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, live)
    live.on_refresh = metrics.note_model
    loader = ModelLoader(settings)

    app.state.settings = settings
    app.state.store = store
    app.state.live = live
    app.state.latest = LatestPredictions(live, metrics.freshness)
    app.state.guard = Guard(settings)
    app.state.metrics = metrics
    app.state.loader = loader
    app.state.scorer = OnDemandScorer(settings, loader)
    app.state.expensive = ExpensiveSlots(settings.api_expensive_concurrency)
    app.state.offload = OffloadPool(settings)
    app.state.sockets = ws.OpenSockets(settings, app.state.guard)

    install_error_handlers(app)
    install_docs(app)
    for router in ROUTERS:
        app.include_router(router)
    # The last added is the outermost: metrics see what the hot path answers too.
    app.add_middleware(HotReads, latest=app.state.latest, guard=app.state.guard, prefix=API_PREFIX,
                       routes={route.path: route for route in predictions.router.routes})
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes,
                       timeout_seconds=settings.http_body_timeout_seconds)
    app.add_middleware(RequestMetrics, registry=registry, excluded=frozenset({"/metrics"}))
    return app
