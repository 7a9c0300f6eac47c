"""Alert rules: what a rule says (``RuleSpec``) and whether it holds for a prediction or a
pipeline event. Pure: no database, no clock, no network.

A rule holds or does not at each observation of its subject (a symbol for signal rules, a
component such as ``ingest`` for pipeline rules). The engine alerts when a rule starts holding
for a subject (one incident) and, if the rule asks for it, when it stops ("resolved"); while it
keeps holding, nothing more is sent. So "BUY with confidence >= 0.6" fires once when a symbol's
prediction becomes a confident BUY, not on every tick while it stays one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tickcast.core.events import SEVERITY_ORDER, PipelineEventKind, Severity
from tickcast.core.predictions import Signal

Channel = Literal["sms", "email", "webhook"]
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164, what Twilio takes
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-^]{0,15}$")


class SignalCondition(BaseModel):
    """Conditions on a prediction, all of which must hold (unset ones are ignored)."""

    model_config = ConfigDict(extra="forbid")

    # The prediction's signal is this one.
    signal: Signal | None = None
    # ... and the previous prediction of the symbol had this other one (e.g. HOLD -> BUY).
    previous_signal: Signal | None = None
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    # |predicted_return| at or above this.
    min_abs_return: float | None = Field(default=None, ge=0)
    # The price lies within the p10-p90 band (as prices: ``price_band``).
    band_contains: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _says_something(self) -> SignalCondition:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("a signal rule needs at least one condition (signal, min_confidence, "
                             "min_abs_return or band_contains)")
        if self.previous_signal is not None and self.signal is None:
            raise ValueError("previous_signal needs signal (the change from one to the other)")
        if self.previous_signal is not None and self.previous_signal == self.signal:
            raise ValueError("previous_signal and signal are the same: that is not a change")
        return self


class PipelineCondition(BaseModel):
    """Pipeline events of these kinds at or above this severity."""

    model_config = ConfigDict(extra="forbid")

    kinds: list[PipelineEventKind] = Field(min_length=1, max_length=50)
    min_severity: Severity = "warning"

    @field_validator("kinds")
    @classmethod
    def _each_once(cls, kinds: list[PipelineEventKind]) -> list[PipelineEventKind]:
        return sorted(set(kinds))


class QuietHours(BaseModel):
    """A daily span, in a time zone, in which messages wait (they are sent when it ends)."""

    model_config = ConfigDict(extra="forbid")

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as America/New_York)") from None
        return name

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours start and end at the same time")
        return self


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    # A phone number in E.164 form (sms), an e-mail address (email) or an http(s) URL (webhook).
    address: str = Field(min_length=1, max_length=320)

    @model_validator(mode="after")
    def _address_fits_channel(self) -> Recipient:
        ok = {
            "sms": bool(_PHONE.match(self.address)),
            "email": bool(_EMAIL.match(self.address)),
            "webhook": self.address.startswith(("http://", "https://")),
        }[self.channel]
        if not ok:
            wanted = {"sms": "a phone number in E.164 form, e.g. +15551234567", "email": "an e-mail address",
                      "webhook": "an http(s) URL"}[self.channel]
            raise ValueError(f"{self.address!r} is not {wanted}")
        return self


def mask_address(address: str) -> str:
    """A recipient named without giving it away (logs, the history's readers)."""
    return address[:3] + "***" + address[-2:] if len(address) > 6 else "***"


class RuleSpec(BaseModel):
    """What a rule is, as the CLI, the API and the store take it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
    # Exactly one of the two conditions.
    on_signal: SignalCondition | None = None
    on_pipeline: PipelineCondition | None = None
    # Signal rules only: the symbols watched (none: every symbol), or a named watchlist.
    symbols: list[str] = Field(default_factory=list, max_length=10_000)
    watchlist: str | None = None
    recipients: list[Recipient] = Field(min_length=1, max_length=50)
    # After a message for a subject, further incidents of the same rule and subject within this
    # many seconds are recorded as throttled and not sent.
    throttle_seconds: int = Field(default=300, ge=0, le=7 * 86400)
    quiet_hours: QuietHours | None = None
    # Also send a "resolved" message when the rule stops holding.
    notify_resolved: bool = False
    severity: Severity = "warning"
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _not_a_number(cls, name: str) -> str:
        if name.isdigit():
            raise ValueError("a rule's name is not a number (numbers are rule ids)")
        return name

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, symbols: list[str]) -> list[str]:
        cleaned = sorted({s.strip().upper() for s in symbols if s.strip()})
        bad = [s for s in cleaned if not _SYMBOL.match(s)]
        if bad:
            raise ValueError(f"not a symbol: {', '.join(bad[:5])}")
        return cleaned

    @model_validator(mode="after")
    def _one_condition(self) -> RuleSpec:
        if (self.on_signal is None) == (self.on_pipeline is None):
            raise ValueError("a rule has exactly one of on_signal and on_pipeline")
        if self.on_pipeline is not None and (self.symbols or self.watchlist):
            raise ValueError("symbols and watchlist apply to signal rules only")
        if self.symbols and self.watchlist:
            raise ValueError("give symbols or a watchlist, not both")
        if self.notify_resolved and self.on_signal is not None and self.on_signal.previous_signal is not None:
            raise ValueError("a signal change holds for one prediction: it has nothing to resolve "
                             "(notify_resolved fits a state, e.g. signal BUY without previous_signal)")
        return self

    @property
    def kind(self) -> Literal["signal", "pipeline"]:
        return "signal" if self.on_signal is not None else "pipeline"


@dataclass(frozen=True)
class PredictionColumns:
    """Predictions as columns, the form ``signal_mask`` evaluates a condition over (the engine's
    batch; a single prediction is a batch of one). A number that is missing, NaN or not a number
    is NaN here, and NaN meets no bound."""

    signal: np.ndarray  # object: the contract's signal strings
    previous_signal: np.ndarray  # object: the symbol's signal before each prediction, None if unknown
    confidence: np.ndarray
    abs_return: np.ndarray
    band_low: np.ndarray  # the p10-p90 band in prices (``price_band``)
    band_high: np.ndarray

    @classmethod
    def of(cls, predictions: list[dict[str, Any]], previous_signals: list[str | None]) -> PredictionColumns:
        def numbers(key: str) -> np.ndarray:
            return np.array([_number(p.get(key)) for p in predictions], dtype=np.float64)

        price, expected = numbers("predicted_price"), numbers("predicted_return")
        with np.errstate(divide="ignore", invalid="ignore"):
            # The contract's quantiles are returns over the bar the prediction is made from,
            # whose close is predicted_price / (1 + predicted_return).
            close = np.where(expected > -1, price / (1.0 + expected), np.nan)
            low, high = close * (1.0 + numbers("p10")), close * (1.0 + numbers("p90"))
        return cls(
            signal=np.array([p.get("signal") for p in predictions], dtype=object),
            previous_signal=np.array(previous_signals, dtype=object),
            confidence=numbers("confidence"), abs_return=np.abs(expected), band_low=low, band_high=high,
        )

    def __len__(self) -> int:
        return len(self.signal)


def signal_mask(condition: SignalCondition, columns: PredictionColumns, rows: np.ndarray | None = None) -> np.ndarray:
    """Which predictions (``rows`` of ``columns``, or all of them) meet every set condition."""
    def column(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    holds = np.ones(len(columns) if rows is None else len(rows), dtype=bool)
    if condition.signal is not None:
        holds &= column(columns.signal) == condition.signal
    if condition.previous_signal is not None:
        holds &= column(columns.previous_signal) == condition.previous_signal
    if condition.min_confidence is not None:
        holds &= column(columns.confidence) >= condition.min_confidence
    if condition.min_abs_return is not None:
        holds &= column(columns.abs_return) >= condition.min_abs_return
    if condition.band_contains is not None:
        holds &= (column(columns.band_low) <= condition.band_contains) & (condition.band_contains <= column(columns.band_high))
    return holds


def signal_holds(condition: SignalCondition, prediction: dict[str, Any], previous_signal: str | None) -> bool:
    """Whether ``prediction`` (the contract's fields, as the ``predictions`` topic carries them)
    meets every set condition; ``previous_signal`` is the symbol's signal before it."""
    return bool(signal_mask(condition, PredictionColumns.of([prediction], [previous_signal]))[0])


def price_band(prediction: dict[str, Any]) -> tuple[float, float] | None:
    """The p10-p90 band in prices, None when the prediction lacks a number it needs."""
    columns = PredictionColumns.of([prediction], [None])
    low, high = float(columns.band_low[0]), float(columns.band_high[0])
    return None if low != low or high != high else (low, high)


def _number(value: Any) -> float:
    # A bool is an int to Python, not a confidence or a return.
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan


def pipeline_holds(condition: PipelineCondition, kind: str, severity: str) -> bool:
    return kind in condition.kinds and SEVERITY_ORDER.get(severity, -1) >= SEVERITY_ORDER[condition.min_severity]


def watches_symbol(rule: RuleSpec, symbol: str, watchlists: dict[str, frozenset[str]]) -> bool:
    """Whether a signal rule watches ``symbol``: listed, in its watchlist, or every symbol."""
    if rule.watchlist is not None:
        return symbol in watchlists.get(rule.watchlist, frozenset())
    return not rule.symbols or symbol in rule.symbols
