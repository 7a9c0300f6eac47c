"""Response models of the HTTP API (``/api/v1``), kept apart from the internal types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tickcast.alerts.rules import RuleSpec
from tickcast.catalog.market import Bar
from tickcast.core.intervals import INTERVALS, IntervalName
from tickcast.core.predictions import Prediction
from tickcast.core.symbols import SYMBOL_PATTERN


def _stale_after(seconds: float) -> str:
    return f"{seconds:g} s = {seconds / 86_400:g} days" if seconds >= 86_400 else f"{seconds:g} s = {seconds / 60:g} minutes"


# The rule of tickcast.core.predictions.is_stale, with the figures of tickcast.core.intervals.
STALE_DESCRIPTION = (
    "true when the data behind the prediction is older than its bar interval allows: data_freshness_sec above "
    + "; above ".join(
        f"{_stale_after(i.stale_after.total_seconds())} for {i.label} bars "
        f"(a horizon in {'minutes or hours, e.g. 30m, 1h' if i.intraday else 'days, e.g. 5d'})"
        for i in INTERVALS.values())
    + ". Both are longer than the market's own pauses (quiet minutes; a weekend and a holiday): a stale "
    "prediction means the feed, the bars or the scorer stopped for the symbol."
)


class PredictionResponse(Prediction):
    """The prediction contract of SPEC.md, plus how old the data behind it is."""

    data_freshness_sec: float = Field(
        description="Seconds between now and data_timestamp (the newest tick the prediction used)"
    )
    stale: bool = Field(description=STALE_DESCRIPTION)
    features: dict[str, float | None] | None = Field(
        None, description="With ?include_features=true: the symbol's online feature values"
    )


class SymbolInfo(BaseModel):
    symbol: str
    has_prediction: bool


class SymbolsResponse(BaseModel):
    count: int
    symbols: list[SymbolInfo]


class BarsResponse(BaseModel):
    symbol: str
    interval: IntervalName
    count: int
    bars: list[Bar] = Field(description="Ascending by window_start; the latest `limit` bars")


class ComponentOut(BaseModel):
    status: Literal["ok", "empty", "error"]
    detail: str


class HealthResponse(BaseModel):
    status: Literal["ok", "empty", "error"] = Field(
        description="error if a component cannot be read (HTTP 503); empty if the service "
        "works but has no data yet; ok otherwise"
    )
    components: dict[str, ComponentOut]
    worker: int = Field(description="The pid of the process that answered: with several API workers behind "
                        "one port, which one (its log lines and metrics carry the same pid)")


class ErrorResponse(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: str = Field(description="The problems, in one readable line")
    errors: list[ValidationIssue]


SymbolStr = Annotated[str, StringConstraints(pattern=SYMBOL_PATTERN)]


def _in_utc(value: datetime) -> datetime:
    # Python's datetime ends at year 1 and 9999 in its own zone: 0001-01-01T00:00+14:00 is
    # before year 1 in UTC, and every later comparison or conversion of it raises OverflowError.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC the time must fall between 0001-01-01 and 9999-12-31") from None


# Every time a client sends (query or body), as an aware UTC datetime; naive means UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]
MAX_BATCH_SYMBOLS = 5000
MAX_SUPPLIED_SEQUENCES = 1000


class PredictionsBatchResponse(BaseModel):
    count: int = Field(description="How many of the requested symbols have a prediction")
    predictions: list[PredictionResponse]
    missing: list[str] = Field(description="Requested symbols without a prediction (unknown or not yet scored)")


class SuppliedSequence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: SymbolStr = Field(description="Routes to the symbol's own model when it has one, else the parent")
    features: list[dict[str, Annotated[float, Field(allow_inf_nan=False)] | None]] = Field(
        min_length=1, max_length=1000,
        description="Feature vectors, oldest first: exactly the models' sequence length, each with every "
        "feature the models take (GET /api/v1/models lists them); null = missing",
    )
    close: float = Field(gt=0, allow_inf_nan=False, description="The latest price, for predicted_price")
    data_timestamp: UtcDatetime | None = Field(None, description="Time of the newest data; default now")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbols: list[SymbolStr] | None = Field(
        None, min_length=1, max_length=MAX_BATCH_SYMBOLS,
        description="Score these symbols from their stored features (exclusive with `sequences`)",
    )
    sequences: list[SuppliedSequence] | None = Field(
        None, min_length=1, max_length=MAX_SUPPLIED_SEQUENCES,
        description="Score feature sequences supplied here (exclusive with `symbols`)",
    )
    model_version: str = Field(
        "champion", pattern=r"^(champion|challenger|[0-9]{1,9}\+[0-9]{1,9})$",
        description="`champion` (default), `challenger`, or `<lstm>+<transformer>` version numbers, "
        "e.g. `3+2` (the format of a prediction's model_version)",
    )
    interval: IntervalName | None = Field(None, description="Bar interval of the models; default the "
                                                 "scorer's")

    @model_validator(mode="after")
    def _one_input(self) -> ScoreRequest:
        if (self.symbols is None) == (self.sequences is None):
            raise ValueError("give exactly one of `symbols` or `sequences`")
        return self


class ScoreResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[Prediction]
    not_scored: dict[str, str] = Field(description="Symbols that could not be scored, with the reason")


class PredictionHistoryResponse(BaseModel):
    symbol: str
    count: int
    predictions: list[Prediction] = Field(description="Ascending by predicted_at")


class AttributionOut(BaseModel):
    feature: str
    value: float | None = Field(description="The feature's newest value (null when missing)")
    baseline: float = Field(description="The value it was replaced with (its training mean)")
    direction: float = Field(description="Contribution to P(up) - P(down)")
    expected_return: float = Field(description="Contribution to the expected return (p50)")


class ExplanationResponse(BaseModel):
    symbol: str
    model_name: str
    model_version: str
    data_timestamp: datetime
    method: str
    score: float = Field(description="P(up) - P(down) of the two models together")
    expected_return: float
    attributions: list[AttributionOut] = Field(description="Largest |direction| first")
    text: str


class ModelVersionOut(BaseModel):
    version: str
    alias: Literal["champion", "challenger"]
    created_at: datetime | None
    run_id: str | None
    metrics: dict[str, float]
    promotion_decision: str | None = None


class RegisteredModelOut(BaseModel):
    name: str
    architecture: str
    interval: str
    champion: ModelVersionOut | None
    challenger: ModelVersionOut | None


class ModelsResponse(BaseModel):
    interval: str
    serving: str | None = Field(description="model_name and model_version of the newest prediction served")
    models: list[RegisteredModelOut]


class MonitoringCheckOut(BaseModel):
    run_key: str = Field(description="The monitor run (its logical date)")
    checked_at: datetime
    model_name: str
    model_version: str
    kind: str = Field(description="drift, realised, confidence or rollback")
    subject: str = Field(description="The feature (drift), or whose figures: champion, predecessor, baseline")
    metric: str = Field(description="psi, ic, hit_rate, mean_confidence_24h, trailing_since_outcomes")
    value: float | None
    threshold: float | None
    flagged: bool = Field(description="Drifted, or rolled back")
    observations: int | None = Field(description="Live rows or realised outcomes behind the value")
    details: dict[str, Any] | None = None


class MonitoringResponse(BaseModel):
    interval: str
    checks: list[MonitoringCheckOut] = Field(description="The newest monitor run's checks (empty before the first)")


# -- alerts -----------------------------------------------------------------------------------------


class AlertRuleOut(RuleSpec):
    """A stored rule: its definition (the request body of POST/PUT) and its id and times."""

    id: int
    created_at: datetime
    updated_at: datetime


class AlertRulesResponse(BaseModel):
    count: int
    rules: list[AlertRuleOut]


class AlertDeliveryOut(BaseModel):
    channel: str
    # Masked (``+15***67``): the history is readable with the `read` scope, the rules with `admin`.
    recipient: str
    status: str = Field(description="pending, sending, sent, dead or unknown")
    attempts: int
    dry_run: bool
    provider_id: str | None
    last_error: str | None
    updated_at: datetime


class AlertOut(BaseModel):
    id: str
    rule: str
    subject: str
    phase: str = Field(description="firing, resolved or test")
    severity: str
    status: str = Field(description="queued, throttled, delivered, partial or dead")
    title: str
    incident_start: datetime
    created_at: datetime
    not_before: datetime | None = Field(description="Held by the rule's quiet hours until then")
    payload: dict[str, Any]
    deliveries: list[AlertDeliveryOut]


class AlertHistoryResponse(BaseModel):
    count: int
    alerts: list[AlertOut]
