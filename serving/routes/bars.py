"""OHLCV bars from the Delta bar tables, read in a process of the app's pool (``serving.offload``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response
from fastapi.concurrency import run_in_threadpool

from serving.deps import ExpensiveReadKey, OffloadDep, StoreDep, SymbolPath
from serving.offload import bars_body
from serving.routes import v1_router
from serving.schemas import BarsResponse, ErrorResponse
from tickcast.core.intervals import IntervalName

MAX_BARS = 5000

router = v1_router("bars")


@router.get("/bars/{symbol}", response_model=BarsResponse,
            responses={404: {"model": ErrorResponse, "description": "Unknown symbol"}},
            summary="Latest OHLCV bars of a symbol, ascending in time")
async def get_bars(
    symbol: SymbolPath, store: StoreDep, work: OffloadDep, _key: ExpensiveReadKey,
    interval: Annotated[IntervalName, Query(description="Bar length: 1d (UTC days) or 1m")] = "1d",
    limit: Annotated[int, Query(ge=1, le=MAX_BARS, description=f"How many of the latest bars (1..{MAX_BARS})")]
    = 200,
) -> Response:
    count, body = await work.run(bars_body, symbol, interval, limit)
    if not count:
        await run_in_threadpool(store.require_known, symbol)
    return Response(body, media_type="application/json")
