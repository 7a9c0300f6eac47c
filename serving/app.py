"""The scoring API (read side): latest predictions, symbols and bars over HTTP.

``create_app(settings)`` builds the app; ``app_from_env`` is the factory uvicorn calls
(``uvicorn --factory serving.app:app_from_env``), reading settings from the environment.
Routes are plain ``def`` functions on purpose: the store does blocking file IO, which
FastAPI runs in its thread pool instead of on the event loop.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CollectorRegistry, Histogram
from prometheus_fastapi_instrumentator import Instrumentator

from serving.deps import StoreDep, SymbolPath
from serving.schemas import (
    BarOut,
    BarsResponse,
    ComponentOut,
    ErrorResponse,
    HealthResponse,
    PredictionResponse,
    SymbolInfo,
    SymbolsResponse,
    ValidationErrorResponse,
)
from tickcast.settings import Settings
from tickcast.store import MarketStore

log = logging.getLogger("tickcast.serving")

API_PREFIX = "/api/v1"
MAX_BARS = 5000

try:
    _VERSION = version("tickcast")
except PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0+unknown"


def _unknown_symbol(store: MarketStore, symbol: str) -> HTTPException:
    hint = "; GET /api/v1/symbols lists the known symbols"
    upper = symbol.upper()
    if upper != symbol and store.is_known(upper):
        hint = f"; symbols are case-sensitive, did you mean '{upper}'?"
    return HTTPException(404, f"unknown symbol '{symbol}': no bars and no prediction{hint}")


def _api_router(freshness: Histogram) -> APIRouter:
    router = APIRouter(
        prefix=API_PREFIX,
        responses={422: {"model": ValidationErrorResponse, "description": "Invalid input"}},
    )

    @router.get(
        "/predictions/{symbol}",
        response_model=PredictionResponse,
        responses={404: {"model": ErrorResponse, "description": "Unknown symbol or no prediction yet"}},
        summary="Latest prediction for a symbol",
        tags=["predictions"],
    )
    def get_prediction(symbol: SymbolPath, store: StoreDep) -> PredictionResponse:
        prediction = store.latest_prediction(symbol)
        if prediction is None:
            if store.is_known(symbol):
                raise HTTPException(
                    404,
                    f"no prediction yet for '{symbol}': it has bars but the predictor "
                    "has not scored it yet",
                )
            raise _unknown_symbol(store, symbol)
        data_ts = prediction.data_timestamp
        if data_ts.tzinfo is None:  # the contract stores UTC; a naive stamp means UTC
            data_ts = data_ts.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - data_ts).total_seconds()
        freshness.observe(max(age, 0.0))
        return PredictionResponse(**prediction.model_dump(), data_freshness_sec=age)

    @router.get(
        "/symbols",
        response_model=SymbolsResponse,
        summary="Known symbols (with bars or a prediction)",
        tags=["symbols"],
    )
    def list_symbols(store: StoreDep) -> SymbolsResponse:
        symbols = [SymbolInfo(symbol=s.symbol, has_prediction=s.has_prediction) for s in store.symbols()]
        return SymbolsResponse(count=len(symbols), symbols=symbols)

    @router.get(
        "/bars/{symbol}",
        response_model=BarsResponse,
        responses={404: {"model": ErrorResponse, "description": "Unknown symbol"}},
        summary="Latest OHLCV bars of a symbol, ascending in time",
        tags=["bars"],
    )
    def get_bars(
        symbol: SymbolPath,
        store: StoreDep,
        interval: Annotated[
            Literal["1d", "1m"], Query(description="Bar length: 1d (UTC days) or 1m")
        ] = "1d",
        limit: Annotated[
            int, Query(ge=1, le=MAX_BARS, description=f"How many of the latest bars (1..{MAX_BARS})")
        ] = 200,
    ) -> BarsResponse:
        bars = store.bars.bars(symbol, interval, limit)
        if not bars and not store.is_known(symbol):
            raise _unknown_symbol(store, symbol)
        return BarsResponse(
            symbol=symbol,
            interval=interval,
            count=len(bars),
            bars=[BarOut.model_validate(b, from_attributes=True) for b in bars],
        )

    return router


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_input(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default body echoes the input back and has no summary line; a client
        # gets one sentence it can show, plus the structured list.
        errors = [
            {
                "loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
                "msg": e.get("msg", "invalid"),
                "type": e.get("type", "value_error"),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors
        ) or "invalid request"
        body = ValidationErrorResponse.model_validate({"detail": detail, "errors": errors})
        return JSONResponse(status_code=422, content=body.model_dump())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc
        )
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error (id {error_id}); the server log has the details"},
        )


def _install_metrics(app: FastAPI) -> Histogram:
    # One registry per app: tests build several apps in one process, and the default
    # global registry refuses a second set of the same metric names. Under several
    # uvicorn workers PROMETHEUS_MULTIPROC_DIR is set and the instrumentator aggregates.
    registry = CollectorRegistry()
    Instrumentator(
        registry=registry,
        excluded_handlers=["/metrics"],
        should_group_status_codes=False,
    ).instrument(app).expose(app, endpoint="/metrics", include_in_schema=True, tags=["ops"])
    return Histogram(
        "tickcast_prediction_data_freshness_seconds",
        "Age of the data behind each prediction served (now - data_timestamp)",
        buckets=(1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400),
        registry=registry,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="TickCast API",
        version=_VERSION,
        description=(
            "Latest short-horizon predictions per symbol and the OHLCV bars they are "
            "computed from. Versioned under /api/v1; /healthz and /metrics for operations."
        ),
        openapi_tags=[
            {"name": "predictions", "description": "Latest prediction per symbol (SPEC.md contract)"},
            {"name": "symbols", "description": "What can be asked for"},
            {"name": "bars", "description": "OHLCV bars from Delta bars_1d / bars_1m"},
            {"name": "ops", "description": "Health and Prometheus metrics"},
        ],
    )
    app.state.settings = settings
    app.state.store = MarketStore(settings)

    _install_error_handlers(app)
    freshness = _install_metrics(app)
    app.include_router(_api_router(freshness))

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "A component cannot be read"}},
        tags=["ops"],
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
        return HealthResponse(status=status, components=components)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn: settings from TICKCAST_* environment variables and .env."""
    return create_app(Settings())
