"""Response models of the HTTP API (``/api/v1``), kept apart from the internal types."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tickcast.predictions import Prediction


class PredictionResponse(Prediction):
    """The prediction contract of SPEC.md, plus how old the data behind it is."""

    data_freshness_sec: float = Field(
        description="Seconds between now and data_timestamp (the newest bar the prediction used)"
    )


class SymbolInfo(BaseModel):
    symbol: str
    has_prediction: bool


class SymbolsResponse(BaseModel):
    count: int
    symbols: list[SymbolInfo]


class BarOut(BaseModel):
    symbol: str
    window_start: datetime
    window_end: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    trades: int | None


class BarsResponse(BaseModel):
    symbol: str
    interval: Literal["1d", "1m"]
    count: int
    bars: list[BarOut] = Field(description="Ascending by window_start; the latest `limit` bars")


class ComponentOut(BaseModel):
    status: Literal["ok", "empty", "error"]
    detail: str


class HealthResponse(BaseModel):
    status: Literal["ok", "empty", "error"] = Field(
        description="error if a component cannot be read (HTTP 503); empty if the service "
        "works but has no data yet; ok otherwise"
    )
    components: dict[str, ComponentOut]


class ErrorResponse(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: str = Field(description="The problems, in one readable line")
    errors: list[ValidationIssue]
