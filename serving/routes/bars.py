"""OHLCV bars from the Delta bar tables."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from serving.deps import ExpensiveReadKey, StoreDep, SymbolPath
from serving.routes import v1_router
from serving.schemas import BarsResponse, ErrorResponse
from tickcast.core.intervals import IntervalName

MAX_BARS = 5000

router = v1_router("bars")


@router.get("/bars/{symbol}", response_model=BarsResponse,
            responses={404: {"model": ErrorResponse, "description": "Unknown symbol"}},
            summary="Latest OHLCV bars of a symbol, ascending in time")
def get_bars(
    symbol: SymbolPath, store: StoreDep, _key: ExpensiveReadKey,
    interval: Annotated[IntervalName, Query(description="Bar length: 1d (UTC days) or 1m")] = "1d",
    limit: Annotated[int, Query(ge=1, le=MAX_BARS, description=f"How many of the latest bars (1..{MAX_BARS})")]
    = 200,
) -> Response:
    bars = store.bars.bars(symbol, interval, limit)
    if not bars:
        store.require_known(symbol)
    # Serialized here, in the thread pool, not by FastAPI on the event loop (5,000 bars).
    return Response(BarsResponse(symbol=symbol, interval=interval, count=len(bars), bars=bars).model_dump_json(),
                    media_type="application/json")
