"""Typed FastAPI dependencies: what a route may use of the app, each read from ``app.state``
where ``serving.app.create_app`` put it. Tests swap them with ``app.dependency_overrides``.

They take the connection rather than the Request so that the WebSocket route can use them too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Security
from starlette.requests import HTTPConnection

from serving.bounds import ExpensiveSlots
from serving.latest import LatestPredictions
from serving.metrics import ServingMetrics
from serving.offload import OffloadPool
from serving.security import Authorized, Guard
from tickcast.auth.apikeys import ApiKey
from tickcast.catalog.market import MarketStore
from tickcast.core.settings import Settings
from tickcast.core.symbols import SYMBOL_PATTERN
from tickcast.scoring.live_predictions import LivePredictions
from tickcast.scoring.models import ModelLoader
from tickcast.scoring.on_demand import OnDemandScorer


async def get_settings(connection: HTTPConnection) -> Settings:
    return connection.app.state.settings


async def get_store(connection: HTTPConnection) -> MarketStore:
    return connection.app.state.store


async def get_live(connection: HTTPConnection) -> LivePredictions:
    return connection.app.state.live


async def get_latest(connection: HTTPConnection) -> LatestPredictions:
    return connection.app.state.latest


async def get_guard(connection: HTTPConnection) -> Guard:
    return connection.app.state.guard


async def get_loader(connection: HTTPConnection) -> ModelLoader:
    return connection.app.state.loader


async def get_scorer(connection: HTTPConnection) -> OnDemandScorer:
    return connection.app.state.scorer


async def get_metrics(connection: HTTPConnection) -> ServingMetrics:
    return connection.app.state.metrics


async def get_offload(connection: HTTPConnection) -> OffloadPool:
    return connection.app.state.offload


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[MarketStore, Depends(get_store)]
LiveDep = Annotated[LivePredictions, Depends(get_live)]
LatestDep = Annotated[LatestPredictions, Depends(get_latest)]
GuardDep = Annotated[Guard, Depends(get_guard)]
LoaderDep = Annotated[ModelLoader, Depends(get_loader)]
ScorerDep = Annotated[OnDemandScorer, Depends(get_scorer)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
OffloadDep = Annotated[OffloadPool, Depends(get_offload)]

ReadKey = Annotated[ApiKey, Security(Authorized("read"))]
ScoreKey = Annotated[ApiKey, Security(Authorized("score"))]


async def _expensive_slot(connection: HTTPConnection) -> AsyncIterator[None]:
    slots: ExpensiveSlots = connection.app.state.expensive
    if not slots.try_enter():
        raise HTTPException(503, f"this server is already running {slots.limit} expensive requests (history, bars, "
                            "explanations, scoring, models); retry in 1 s", headers={"Retry-After": "1"})
    try:
        yield
    finally:
        slots.leave()


# The key (checked, charged to its budget for expensive routes), then a free slot; in that
# order, so a request without a valid key never holds a slot.
_ExpensiveSlot = Annotated[None, Depends(_expensive_slot)]


async def _expensive_read(key: Annotated[ApiKey, Security(Authorized("read", expensive=True))],
                          _slot: _ExpensiveSlot) -> ApiKey:
    return key


async def _expensive_score(key: Annotated[ApiKey, Security(Authorized("score", expensive=True))],
                           _slot: _ExpensiveSlot) -> ApiKey:
    return key


# For the plain-def routes that read files or run models (serving.bounds).
ExpensiveReadKey = Annotated[ApiKey, Depends(_expensive_read)]
ExpensiveScoreKey = Annotated[ApiKey, Depends(_expensive_score)]

SymbolPath = Annotated[
    str,
    Path(
        pattern=SYMBOL_PATTERN,
        description="Ticker symbol as it appears on the feed, e.g. AAPL, BRK.B, ^GSPC",
        examples=["AAPL"],
    ),
]
