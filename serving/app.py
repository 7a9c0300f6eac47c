"""The scoring API: latest predictions, on-demand scoring, history, explanations, models,
and a WebSocket push of every new prediction.

``create_app(settings)`` builds the app; ``app_from_env`` is the factory uvicorn calls
(``uvicorn --factory serving.app:app_from_env``), reading settings from the environment.

The hot routes (one or many latest predictions) are ``async`` and read an in-memory copy of
the online store that a background task keeps current (``serving.live``); they send the
stored JSON as it is, with the freshness appended. Routes that do file IO or model work
are plain ``def``, which FastAPI runs in its thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Literal

import orjson
from fastapi import (
    APIRouter,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
    Security,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from serving.deps import StoreDep, SymbolPath
from serving.hot import HotReads
from serving.inputs import invalid, parse_symbols, rate_limited_response, symbol_list
from serving.live import LivePredictions, Subscriber
from serving.metrics import RequestMetrics, merged_metrics_dir
from serving.schemas import (
    MAX_BATCH_SYMBOLS,
    AttributionOut,
    BarOut,
    BarsResponse,
    ComponentOut,
    ErrorResponse,
    ExplanationResponse,
    HealthResponse,
    ModelsResponse,
    ModelVersionOut,
    PredictionHistoryResponse,
    PredictionResponse,
    PredictionsBatchResponse,
    RegisteredModelOut,
    ScoreRequest,
    ScoreResponse,
    SymbolInfo,
    SymbolsResponse,
    ValidationErrorResponse,
)
from serving.security import API_KEY_HEADER, Guard, RateLimited
from tickcast.auth.apikeys import ApiKey
from tickcast.catalog.market import MarketStore
from tickcast.core.predictions import Prediction
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.serving")

API_PREFIX = "/api/v1"
MAX_BARS = 5000
MAX_HISTORY = 10_000

try:
    _VERSION = version("tickcast")
except PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0+unknown"



class Authorized(APIKeyHeader):
    """The caller's key (``X-API-Key``), checked for ``required_scope`` and charged against
    its rate limit.

    The security scheme itself rather than a chain of dependencies (header, key, scope,
    limit): FastAPI resolves every level of a chain on every request, and on the hot GET
    that cost more than the route. OpenAPI documents it as the ``ApiKey`` scheme.
    """

    def __init__(self, required_scope: str):
        super().__init__(
            name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey",
            description="An API key from `tickcast apikey create --name NAME --scopes read,score`",
        )
        self.required_scope = required_scope

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        guard: Guard = request.app.state.guard
        key = guard.authenticate(request.headers.get(API_KEY_HEADER))
        guard.authorize(key, self.required_scope)
        guard.charge(key, request.client.host if request.client else None)
        return key


ReadKey = Annotated[ApiKey, Security(Authorized("read"))]
ScoreKey = Annotated[ApiKey, Security(Authorized("score"))]


def _unknown_symbol(store: MarketStore, symbol: str) -> HTTPException:
    hint = "; GET /api/v1/symbols lists the known symbols"
    upper = symbol.upper()
    if upper != symbol and store.is_known(upper):
        hint = f"; symbols are case-sensitive, did you mean '{upper}'?"
    return HTTPException(404, f"unknown symbol '{symbol}': no bars and no prediction{hint}")


def _with_freshness(payload: bytes, data_timestamp: float, now: float, extra: bytes = b"") -> bytes:
    # The stored JSON ends with "}": append the request-time fields instead of re-encoding it.
    return b"%s,\"data_freshness_sec\":%.3f%s}" % (payload[:-1], now - data_timestamp, extra)


def _models_interval(model_name: str) -> str | None:
    """``tickcast-lstm-1d+tickcast-transformer-1d`` -> ``1d``; None for other models."""
    first = model_name.split("+")[0]
    return first.rsplit("-", 1)[-1] if first.startswith("tickcast-lstm-") else None


class Api:
    """The routes, with what they share (settings, stores, models, metrics)."""

    def __init__(self, app: FastAPI, settings: Settings, registry: CollectorRegistry):
        from tickcast.scoring.models import ModelLoader

        self.settings = settings
        self.store: MarketStore = app.state.store
        self.live: LivePredictions = app.state.live
        self.loader = ModelLoader(settings)
        self.freshness = Histogram(
            "tickcast_prediction_data_freshness_seconds",
            "Age of the data behind each prediction served (now - data_timestamp)",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400),
            registry=registry,
        )
        Gauge("tickcast_websocket_clients", "Connected WebSocket clients", registry=registry).set_function(
            lambda: len(self.live.clients))
        Gauge("tickcast_predictions_symbols", "Symbols with a latest prediction in memory",
              registry=registry).set_function(lambda: len(self.live.latest))
        Gauge("tickcast_prediction_newest_data_age_seconds",
              "Seconds since the newest data behind any held prediction", registry=registry).set_function(
            lambda: time.time() - max((e.data_timestamp for e in self.live.latest.values()), default=time.time()))
        self.model_info = Gauge("tickcast_serving_model_info", "The model of the newest prediction held (value 1)",
                                ["model_name", "model_version"], registry=registry)
        self._shown_model: tuple[str, str] | None = None

    def note_model(self) -> None:
        current = self.live.last_model
        if current is not None and current != self._shown_model:
            if self._shown_model is not None:
                self.model_info.remove(*self._shown_model)
            self.model_info.labels(*current).set(1)
            self._shown_model = current

    # -- the hot reads, shared by the routes and serving.hot -----------------------------------

    def latest_body(self, symbol: str, extra: bytes = b"") -> bytes | None:
        """The latest prediction's JSON with its freshness; None when there is none."""
        entry = self.live.latest.get(symbol)
        if entry is None:
            return None
        now = time.time()
        self.freshness.observe(max(now - entry.data_timestamp, 0.0))
        return _with_freshness(entry.payload, entry.data_timestamp, now, extra)

    def batch_body(self, wanted: list[str]) -> bytes:
        now = time.time()
        found, missing = [], []
        latest = self.live.latest
        for symbol in wanted:
            entry = latest.get(symbol)
            if entry is None:
                missing.append(symbol)
            else:
                found.append(_with_freshness(entry.payload, entry.data_timestamp, now))
                self.freshness.observe(max(now - entry.data_timestamp, 0.0))
        return b'{"count":%d,"predictions":[%s],"missing":%s}' % (
            len(found), b",".join(found), orjson.dumps(missing))

    # -- routes -------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(
            prefix=API_PREFIX,
            responses={
                401: {"model": ErrorResponse, "description": "Missing, invalid or revoked API key"},
                403: {"model": ErrorResponse, "description": "The key lacks the route's scope"},
                422: {"model": ValidationErrorResponse, "description": "Invalid input"},
                429: {"model": ErrorResponse, "description": "Rate limit reached; see Retry-After"},
            },
        )
        not_found = {404: {"model": ErrorResponse, "description": "Unknown symbol or nothing to show yet"}}

        @router.get("/predictions/{symbol}", response_model=PredictionResponse, responses=not_found,
                    summary="Latest prediction for a symbol", tags=["predictions"])
        async def get_prediction(
            symbol: SymbolPath, _key: ReadKey,
            include_features: Annotated[bool, Query(description="Add the symbol's online feature values")] = False,
        ) -> Response:
            extra = b""
            if include_features:
                values = await run_in_threadpool(self._online_features, symbol)  # may raise a 503
                extra = b',"features":' + orjson.dumps(values)
            body = self.latest_body(symbol, extra)
            if body is None:
                raise await run_in_threadpool(self._no_prediction, self.store, symbol)
            return Response(body, media_type="application/json")

        @router.get("/predictions", response_model=PredictionsBatchResponse,
                    summary=f"Latest predictions of up to {MAX_BATCH_SYMBOLS:,} symbols", tags=["predictions"])
        async def get_predictions(
            _key: ReadKey,
            symbols: Annotated[str, Query(
                min_length=1, max_length=40 * MAX_BATCH_SYMBOLS,
                description=f"Comma-separated symbols (at most {MAX_BATCH_SYMBOLS:,})", examples=["AAPL,MSFT"],
            )],
        ) -> Response:
            return Response(self.batch_body(parse_symbols(symbols)), media_type="application/json")

        @router.post("/score", response_model=ScoreResponse, responses=not_found,
                     summary="Score symbols (stored features) or supplied feature sequences now",
                     tags=["scoring"])
        def score(request: ScoreRequest, _key: ScoreKey) -> ScoreResponse:
            return self._score(request)

        @router.get("/predictions/{symbol}/history", response_model=PredictionHistoryResponse,
                    responses=not_found, summary="Past predictions of a symbol, from Delta", tags=["predictions"])
        def history(
            symbol: SymbolPath, store: StoreDep, _key: ReadKey,
            start: Annotated[datetime | None, Query(description="From this predicted_at (UTC if no zone)")] = None,
            end: Annotated[datetime | None, Query(description="Up to this predicted_at (inclusive)")] = None,
            limit: Annotated[int, Query(ge=1, le=MAX_HISTORY, description="At most this many, the newest")] = 1000,
        ) -> PredictionHistoryResponse:
            return self._history(store, symbol, start, end, limit)

        @router.get("/explanations/{symbol}", response_model=ExplanationResponse, responses=not_found,
                    summary="What drives a symbol's latest prediction (per-feature attributions)",
                    tags=["predictions"])
        def explanation(symbol: SymbolPath, store: StoreDep, _key: ReadKey) -> ExplanationResponse:
            return self._explain(store, symbol)

        @router.get("/models", response_model=ModelsResponse, summary="Champion and challenger models",
                    responses={503: {"model": ErrorResponse, "description": "The model registry cannot be read"}},
                    tags=["models"])
        def models(
            _key: ReadKey,
            interval: Annotated[Literal["1d", "1m"] | None, Query(description="Default: the scorer's")] = None,
        ) -> ModelsResponse:
            return self._models(interval or self.settings.scorer_interval)

        @router.get("/symbols", response_model=SymbolsResponse, summary="Known symbols (with bars or a prediction)",
                    tags=["symbols"])
        def list_symbols(store: StoreDep, _key: ReadKey) -> SymbolsResponse:
            symbols = [SymbolInfo(symbol=s.symbol, has_prediction=s.has_prediction) for s in store.symbols()]
            return SymbolsResponse(count=len(symbols), symbols=symbols)

        @router.get("/bars/{symbol}", response_model=BarsResponse,
                    responses={404: {"model": ErrorResponse, "description": "Unknown symbol"}},
                    summary="Latest OHLCV bars of a symbol, ascending in time", tags=["bars"])
        def get_bars(
            symbol: SymbolPath, store: StoreDep, _key: ReadKey,
            interval: Annotated[Literal["1d", "1m"], Query(description="Bar length: 1d (UTC days) or 1m")] = "1d",
            limit: Annotated[int, Query(ge=1, le=MAX_BARS, description=f"How many of the latest bars (1..{MAX_BARS})")]
            = 200,
        ) -> BarsResponse:
            bars = store.bars.bars(symbol, interval, limit)
            if not bars and not store.is_known(symbol):
                raise _unknown_symbol(store, symbol)
            return BarsResponse(symbol=symbol, interval=interval, count=len(bars),
                                bars=[BarOut.model_validate(b, from_attributes=True) for b in bars])

        return router

    # -- work behind the routes ----------------------------------------------------------------

    @staticmethod
    def _no_prediction(store: MarketStore, symbol: str) -> HTTPException:
        if store.is_known(symbol):
            return HTTPException(404, f"no prediction yet for '{symbol}': it has bars but the scorer has not "
                                      "scored it yet")
        return _unknown_symbol(store, symbol)

    def _online_features(self, symbol: str) -> dict[str, float | None]:
        import math

        from tickcast.catalog import featurestore

        try:
            frame = featurestore.online_features(self.settings, [symbol], self.settings.scorer_interval)
        except Exception as exc:  # noqa: BLE001 - the feature store being down is a 503, not a 500
            log.warning("online features unavailable: %s", exc)
            raise HTTPException(503, f"the online feature store cannot be read: {exc}") from None
        row = frame.iloc[0].to_dict() if len(frame) else {}
        out = {}
        for name, value in row.items():
            if name in ("symbol", "interval", "window_start", "feature_set_version"):
                continue
            out[name] = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        return out

    def _dual(self, interval: str, model_version: str):
        from tickcast.models.registry import RegistryError

        refs = model_version.split("+") if "+" in model_version else [model_version, model_version]
        try:
            dual = self.loader.dual(interval, *refs)
        except RegistryError as exc:
            raise invalid(("body", "model_version"), str(exc)) from None
        if dual is None:
            what = "no champion" if model_version == "champion" else f"no model version '{model_version}'"
            raise HTTPException(404, f"{what} for interval {interval}: train and promote models first "
                                     "(tickcast train, tickcast promote); GET /api/v1/models lists them")
        return dual

    def _score(self, request: ScoreRequest) -> ScoreResponse:
        import numpy as np
        import pandas as pd

        from tickcast.scoring.score import SequenceBatch, score
        from tickcast.scoring.sources import latest_sequences

        interval = request.interval or self.settings.scorer_interval
        dual = self._dual(interval, request.model_version)
        if request.symbols is not None:
            wanted = list(dict.fromkeys(request.symbols))
            batch, not_scored = latest_sequences(self.settings, wanted, interval, dual.features, dual.sequence_length)
            if len(batch) == 0:
                raise HTTPException(404, "none of the symbols could be scored: " + "; ".join(
                    f"{s}: {r}" for s, r in list(not_scored.items())[:5]))
        else:
            not_scored = {}
            raws = []
            for i, supplied in enumerate(request.sequences):
                if len(supplied.features) != dual.sequence_length:
                    raise invalid(("body", "sequences", i, "features"), f"the models take {dual.sequence_length} "
                                             f"feature vectors, got {len(supplied.features)}")
                for j, vector in enumerate(supplied.features):
                    missing = [f for f in dual.features if f not in vector]
                    unknown = [f for f in vector if f not in dual.features]
                    if missing or unknown:
                        raise invalid(("body", "sequences", i, "features", j), f"missing {missing[:5]}, unknown "
                                                 f"{unknown[:5]}; the models take {dual.features}")
                raws.append([[np.nan if v[f] is None else v[f] for f in dual.features] for v in supplied.features])
            now = pd.Timestamp.now(tz=UTC)

            def stamp(value: datetime | None) -> pd.Timestamp:
                value = pd.Timestamp(value) if value is not None else now
                return value.tz_localize(UTC) if value.tzinfo is None else value.tz_convert(UTC)

            batch = SequenceBatch(
                symbols=np.array([s.symbol for s in request.sequences], dtype=object),
                raw=np.asarray(raws, dtype=float),
                close=np.array([s.close for s in request.sequences], dtype=float),
                data_timestamp=pd.DatetimeIndex([stamp(s.data_timestamp) for s in request.sequences]),
            )
        frame = score(dual, batch)
        predictions = [Prediction.model_validate(orjson.loads(p)) for *_, p in _payloads(frame)]
        return ScoreResponse(model_name=dual.model_name, model_version=dual.model_version,
                             predictions=predictions, not_scored=not_scored)

    def _history(self, store: MarketStore, symbol: str, start: datetime | None, end: datetime | None,
                 limit: int) -> PredictionHistoryResponse:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        def utc(value: datetime) -> datetime:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

        if start is not None and end is not None and utc(start) > utc(end):
            raise invalid(("query", "start"), "start is after end")
        try:
            dataset = DeltaTable(self.settings.table_path("predictions")).to_pyarrow_dataset()
        except TableNotFoundError:
            dataset = None
        rows = []
        if dataset is not None:
            where = ds.field("symbol") == symbol
            if start is not None:
                where &= ds.field("predicted_at") >= utc(start)
            if end is not None:
                where &= ds.field("predicted_at") <= utc(end)
            table = dataset.to_table(filter=where)
            if table.num_rows:
                order = pc.sort_indices(table, [("predicted_at", "ascending")])
                table = table.take(order).slice(max(table.num_rows - limit, 0))
                rows = table.to_pylist()
        if not rows and not store.is_known(symbol):
            raise _unknown_symbol(store, symbol)
        predictions = []
        for row in rows:
            for stamp in ("data_timestamp", "predicted_at"):
                if row[stamp] is not None and row[stamp].tzinfo is None:
                    row[stamp] = row[stamp].replace(tzinfo=UTC)
            predictions.append(Prediction.model_validate(row))
        return PredictionHistoryResponse(symbol=symbol, count=len(predictions), predictions=predictions)

    def _explain(self, store: MarketStore, symbol: str) -> ExplanationResponse:
        import math

        from tickcast.models.explain import explain
        from tickcast.scoring.sources import latest_sequences

        entry = self.live.latest.get(symbol)
        if entry is None:
            raise self._no_prediction(store, symbol)
        interval = _models_interval(entry.model_name)
        if interval is None:
            raise HTTPException(404, f"the latest prediction for '{symbol}' comes from {entry.model_name}, not the "
                                     "trained models; explanations need a champion (tickcast train, tickcast promote)")
        dual = self._dual(interval, entry.model_version)
        batch, skipped = latest_sequences(self.settings, [symbol], interval, dual.features, dual.sequence_length)
        if len(batch) == 0:
            raise HTTPException(404, f"cannot explain '{symbol}': {skipped.get(symbol, 'no features')}")
        result = explain(list(dual.bundles), symbol, batch.raw[0])
        return ExplanationResponse(
            symbol=symbol, model_name=dual.model_name, model_version=dual.model_version,
            data_timestamp=batch.data_timestamp[0].to_pydatetime(), method=result.method, score=result.score,
            expected_return=result.expected_return, text=result.text,
            attributions=[
                AttributionOut(feature=a.feature, value=a.value if math.isfinite(a.value) else None,
                               baseline=a.baseline, direction=a.direction, expected_return=a.expected_return)
                for a in result.attributions
            ],
        )

    def _models(self, interval: str) -> ModelsResponse:
        from tickcast.models.registry import DECISION_TAG, registered_name
        from tickcast.scoring.models import ARCHITECTURES

        try:
            found = self.loader.aliases(interval)
        except Exception as exc:  # noqa: BLE001 - the registry being down is the client's answer, not a 500
            log.warning("model registry unreachable: %s", exc)
            raise HTTPException(503, f"the model registry cannot be read: {exc}") from None

        def described(alias: str, mv) -> ModelVersionOut | None:
            if mv is None:
                return None
            metrics = {}
            for key, value in (mv.tags or {}).items():
                if key.startswith("metric."):
                    try:
                        metrics[key.removeprefix("metric.")] = float(value)
                    except ValueError:
                        continue
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC) if mv.creation_timestamp else None
            return ModelVersionOut(version=str(mv.version), alias=alias, created_at=created, run_id=mv.run_id,
                                   metrics={k: v for k, v in metrics.items() if v == v},
                                   promotion_decision=(mv.tags or {}).get(DECISION_TAG))

        models = []
        for arch in ARCHITECTURES:
            name = registered_name(arch, interval)
            aliases = found.get(name, {})
            models.append(RegisteredModelOut(name=name, architecture=arch, interval=interval,
                                             champion=described("champion", aliases.get("champion")),
                                             challenger=described("challenger", aliases.get("challenger"))))
        serving = " ".join(self.live.last_model) if self.live.last_model else None
        return ModelsResponse(interval=interval, serving=serving, models=models)

    # -- WebSocket ------------------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        guard: Guard = websocket.app.state.guard
        await websocket.accept()
        presented = websocket.headers.get(API_KEY_HEADER) or websocket.query_params.get("api_key")
        try:
            key = guard.authenticate(presented)
            guard.authorize(key, "read")
        except HTTPException as exc:
            await websocket.send_json({"type": "error", "status": exc.status_code, "detail": exc.detail})
            await websocket.close(code=4000 + exc.status_code)
            return
        subscriber = Subscriber(websocket)
        self.live.join(subscriber)
        sender = asyncio.create_task(self._send_loop(subscriber))
        try:
            while True:
                text = await websocket.receive_text()
                reply = self._ws_command(subscriber, text)
                await websocket.send_text(reply.decode())
        except WebSocketDisconnect:
            pass
        finally:
            self.live.leave(subscriber)
            sender.cancel()

    async def _send_loop(self, subscriber: Subscriber) -> None:
        try:
            while True:
                message = await subscriber.queue.get()
                await subscriber.websocket.send_text(message.decode())
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            return

    def _ws_command(self, subscriber: Subscriber, text: str) -> bytes:
        try:
            command = orjson.loads(text)
        except orjson.JSONDecodeError:
            return orjson.dumps({"type": "error", "status": 422, "detail": "messages must be JSON objects"})
        action = command.get("action") if isinstance(command, dict) else None
        if action not in ("subscribe", "unsubscribe"):
            return orjson.dumps({"type": "error", "status": 422,
                                 "detail": 'send {"action": "subscribe" | "unsubscribe", "symbols": [...]}'})
        try:
            symbols = symbol_list.validate_python(command.get("symbols"))
        except ValidationError:
            return orjson.dumps({"type": "error", "status": 422,
                                 "detail": "symbols must be a list of ticker symbols"})
        if action == "subscribe":
            self.live.subscribe(subscriber, symbols)
            # The current prediction first, so a client never waits for the next tick to know it.
            for symbol in symbols:
                entry = self.live.latest.get(symbol)
                if entry is not None:
                    subscriber.offer(b'{"type":"prediction_update","prediction":' + entry.payload + b"}")
        else:
            self.live.unsubscribe(subscriber, symbols)
        return orjson.dumps({"type": f"{action}d", "symbols": sorted(subscriber.symbols)})


def _payloads(frame):
    from tickcast.core.predictions import frame_payloads

    return frame_payloads(frame)


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

    @app.exception_handler(RateLimited)
    async def rate_limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return rate_limited_response(exc)

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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.live.start()
        yield
        await app.state.live.stop()

    app = FastAPI(
        title="TickCast API",
        version=_VERSION,
        lifespan=lifespan,
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
            {"name": "ops", "description": "Health and Prometheus metrics"},
        ],
    )
    app.state.settings = settings
    app.state.store = MarketStore(settings)
    app.state.live = LivePredictions(app.state.store.online, settings.api_poll_seconds)
    app.state.guard = Guard(settings)

    _install_error_handlers(app)
    # One registry per app: tests build several apps in one process, and the default
    # global registry refuses a second set of the same metric names.
    registry = CollectorRegistry()
    api = Api(app, settings, registry)

    merged_dir = merged_metrics_dir(settings)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        exposed = registry
        if merged_dir is not None:
            from prometheus_client import multiprocess

            exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(exposed, path=str(merged_dir))
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    app.state.live.on_refresh = api.note_model
    router = api.router()
    app.include_router(router)
    app.add_api_websocket_route("/ws/predictions", api.websocket)
    # The last added is the outermost: metrics see what the hot path answers too.
    app.add_middleware(HotReads, api=api, guard=app.state.guard, prefix=API_PREFIX,
                       routes={route.path: route for route in router.routes})
    app.add_middleware(RequestMetrics, registry=registry, excluded=frozenset({"/metrics"}))

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
