"""Latest predictions (one symbol or a batch) and a symbol's past predictions.

The two latest-prediction GETs are ``async`` and read the in-memory copy; most requests for
them never get here (``serving.hot`` answers them with the same bytes), so these are where
the other cases are answered: errors, ``include_features``. History reads Delta in a process
of the app's pool (``serving.offload``), which hands back the JSON.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Query, Response
from fastapi.concurrency import run_in_threadpool

from serving.deps import ExpensiveReadKey, LatestDep, OffloadDep, ReadKey, SettingsDep, StoreDep, SymbolPath
from serving.errors import located
from serving.inputs import parse_symbols
from serving.offload import history_body
from serving.routes import NOT_FOUND, v1_router
from serving.schemas import (
    MAX_BATCH_SYMBOLS,
    PredictionHistoryResponse,
    PredictionResponse,
    PredictionsBatchResponse,
    UtcDatetime,
)
from tickcast.catalog import featurestore

MAX_HISTORY = 10_000

router = v1_router("predictions")


@router.get("/predictions/{symbol}", response_model=PredictionResponse, responses=NOT_FOUND,
            summary="Latest prediction for a symbol")
async def get_prediction(
    symbol: SymbolPath, latest: LatestDep, store: StoreDep, settings: SettingsDep, _key: ReadKey,
    include_features: Annotated[bool, Query(description="Add the symbol's online feature values")] = False,
) -> Response:
    extra = b""
    if include_features:
        values = await run_in_threadpool(featurestore.online_values, settings, symbol, settings.scorer_interval)
        extra = b',"features":' + orjson.dumps(values)
    body = latest.latest_body(symbol, extra)
    if body is None:
        raise await run_in_threadpool(store.missing_prediction, symbol)
    return Response(body, media_type="application/json")


@router.get("/predictions", response_model=PredictionsBatchResponse,
            summary=f"Latest predictions of up to {MAX_BATCH_SYMBOLS:,} symbols")
async def get_predictions(
    latest: LatestDep, _key: ReadKey,
    symbols: Annotated[str, Query(
        min_length=1, max_length=40 * MAX_BATCH_SYMBOLS,
        description=f"Comma-separated symbols (at most {MAX_BATCH_SYMBOLS:,})", examples=["AAPL,MSFT"],
    )],
) -> Response:
    return Response(latest.batch_body(parse_symbols(symbols)), media_type="application/json")


@router.get("/predictions/{symbol}/history", response_model=PredictionHistoryResponse, responses=NOT_FOUND,
            summary="Past predictions of a symbol, from Delta")
async def history(
    symbol: SymbolPath, store: StoreDep, work: OffloadDep, _key: ExpensiveReadKey,
    start: Annotated[UtcDatetime | None, Query(description="From this predicted_at (UTC if no zone)")] = None,
    end: Annotated[UtcDatetime | None, Query(description="Up to this predicted_at (inclusive)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY, description="At most this many, the newest")] = 1000,
) -> Response:
    with located("query"):
        count, body = await work.run(history_body, symbol, start, end, limit)
    if not count:
        await run_in_threadpool(store.require_known, symbol)
    return Response(body, media_type="application/json")
