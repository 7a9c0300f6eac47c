"""OHLCV bars from the Delta bar tables."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from serving.deps import ReadKey, StoreDep, SymbolPath
from serving.routes import v1_router
from serving.schemas import BarsResponse, ErrorResponse
from tickcast.core.intervals import IntervalName

MAX_BARS = 5000

router = v1_router("bars")


@router.get("/bars/{symbol}", response_model=BarsResponse,
            responses={404: {"model": ErrorResponse, "description": "Unknown symbol"}},
            summary="Latest OHLCV bars of a symbol, ascending in time")
def get_bars(
    symbol: SymbolPath, store: StoreDep, _key: ReadKey,
    interval: Annotated[IntervalName, Query(description="Bar length: 1d (UTC days) or 1m")] = "1d",
    limit: Annotated[int, Query(ge=1, le=MAX_BARS, description=f"How many of the latest bars (1..{MAX_BARS})")]
    = 200,
) -> BarsResponse:
    bars = store.bars.bars(symbol, interval, limit)
    if not bars:
        store.require_known(symbol)
    return BarsResponse(symbol=symbol, interval=interval, count=len(bars),
                        bars=bars)
