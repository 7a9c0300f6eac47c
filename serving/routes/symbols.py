"""The symbols that can be asked for: those with bars or a prediction."""

from __future__ import annotations

from serving.deps import ReadKey, StoreDep
from serving.routes import v1_router
from serving.schemas import SymbolInfo, SymbolsResponse

router = v1_router("symbols")


@router.get("/symbols", response_model=SymbolsResponse, summary="Known symbols (with bars or a prediction)")
def list_symbols(store: StoreDep, _key: ReadKey) -> SymbolsResponse:
    symbols = [SymbolInfo(symbol=s.symbol, has_prediction=s.has_prediction) for s in store.symbols()]
    return SymbolsResponse(count=len(symbols), symbols=symbols)
