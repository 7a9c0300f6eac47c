"""Typed FastAPI dependencies. Tests swap them with ``app.dependency_overrides``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from tickcast.catalog.market import MarketStore
from tickcast.core.settings import Settings
from tickcast.core.symbols import SYMBOL_PATTERN


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> MarketStore:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[MarketStore, Depends(get_store)]
SymbolPath = Annotated[
    str,
    Path(
        pattern=SYMBOL_PATTERN,
        description="Ticker symbol as it appears on the feed, e.g. AAPL, BRK.B, ^GSPC",
        examples=["AAPL"],
    ),
]
