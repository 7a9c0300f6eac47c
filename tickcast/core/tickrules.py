"""What makes a tick storable: the rules the stream quarantines by and the live scorer drops by.

Declared once, here, as data; each engine compiles them:

* the fields and their JSON types come from the message schema, ``kafka/ticks.schema.json``;
* ``TICK_RULES``, in order, say why a typed tick is refused (the first broken rule is the reason
  the stream stores in ``quarantine``). A rule is a function of a ``TickColumns`` backend, so the
  same rule becomes Spark column expressions in the stream (``spark_jobs.transforms``) and numpy
  array checks in the live scorer (``ArrayTicks`` below);
* ``DEDUPE`` and ``LATENESS`` are judged after them, against what came before: the first copy
  of a ``msg_id`` wins, and a tick older than its feed's newest tick by more than the tolerance
  is late (a feed is a ``source`` and ``symbol``: one feed's clock never makes another's late).

Typing follows Spark's JSON reader, since the stream is the system of record: a number where a
string belongs is read as its text, anything but a number where a number belongs is missing,
and a timestamp is kept as text until the rules read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import orjson

from tickcast.core.symbols import SYMBOL_PATTERN
from tickcast.core.ticks import SCHEMA_VERSION, tick_schema


def _json_type(spec: dict[str, Any]) -> str:
    kinds = [k for k in ([spec["type"]] if isinstance(spec["type"], str) else spec["type"]) if k != "null"]
    (kind,) = kinds
    return "time" if spec.get("format") == "date-time" else kind


# Field -> "integer" | "number" | "string" | "time" (a date-time string), in message order.
FIELD_TYPES: dict[str, str] = {name: _json_type(spec) for name, spec in tick_schema()["properties"].items()}
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (SCHEMA_VERSION,)
# Required besides the schema version, which has a rule of its own.
REQUIRED_FIELDS: tuple[str, ...] = tuple(f for f in tick_schema()["required"] if f != "schema_version")
TIME_FIELDS: tuple[str, ...] = tuple(f for f, kind in FIELD_TYPES.items() if kind == "time")
QUOTE_FIELDS = ("bid", "ask")

REASON_INVALID_JSON = "invalid_json"
REASON_SCHEMA_VERSION = "unsupported_schema_version"
REASON_INVALID_SYMBOL = "invalid_symbol"
REASON_INVALID_PRICE = "invalid_price"
REASON_INVALID_VOLUME = "invalid_volume"
REASON_INVALID_QUOTE = "invalid_bid_ask"
REASON_FUTURE = "ts_in_future"
REASON_LATE = "late"
REASON_DUPLICATE = "duplicate_msg_id"


def missing_reason(field: str) -> str:
    return f"missing_or_invalid:{field}"


def timestamp_reason(field: str) -> str:
    return f"invalid_timestamp:{field}"


class TickColumns(Protocol):
    """What a rule may ask of a batch of typed ticks. Each engine answers with its own columns
    (Spark ``Column``s, numpy arrays); a rule combines them with ``&``, ``|``, ``~`` and
    comparisons, which both understand. Where a value is missing, a check may answer anything:
    the rules ask ``missing`` first."""

    def unparsed(self) -> Any: ...

    def missing(self, field: str) -> Any: ...

    def value(self, field: str) -> Any: ...

    def not_finite(self, field: str) -> Any: ...

    def empty(self, field: str) -> Any: ...

    def not_matching(self, field: str, pattern: str) -> Any: ...

    def not_one_of(self, field: str, values: Sequence[Any]) -> Any: ...

    def unreadable_time(self, field: str) -> Any: ...

    def after_received(self, field: str) -> Any:
        """Later than the record's arrival (the Kafka record time) plus the future tolerance."""


@dataclass(frozen=True)
class TickRule:
    reason: str
    broken: Callable[[TickColumns], Any]


def _missing(field: str) -> Callable[[TickColumns], Any]:
    return lambda t: t.missing(field)


def _unreadable_time(field: str) -> Callable[[TickColumns], Any]:
    return lambda t: t.unreadable_time(field)


def _bad_quote(t: TickColumns, field: str) -> Any:
    return ~t.missing(field) & (t.not_finite(field) | (t.value(field) <= 0))


TICK_RULES: tuple[TickRule, ...] = (
    # Malformed JSON, a JSON value that is not an object, or an object with none of the fields.
    TickRule(REASON_INVALID_JSON, lambda t: t.unparsed()),
    TickRule(REASON_SCHEMA_VERSION,
             lambda t: t.missing("schema_version") | t.not_one_of("schema_version", SUPPORTED_SCHEMA_VERSIONS)),
    *(TickRule(missing_reason(f), _missing(f)) for f in REQUIRED_FIELDS),
    TickRule(missing_reason("msg_id"), lambda t: t.empty("msg_id")),
    TickRule(REASON_INVALID_SYMBOL, lambda t: t.not_matching("symbol", SYMBOL_PATTERN)),
    *(TickRule(timestamp_reason(f), _unreadable_time(f)) for f in TIME_FIELDS),
    TickRule(REASON_INVALID_PRICE, lambda t: t.not_finite("price") | (t.value("price") <= 0)),
    TickRule(REASON_INVALID_VOLUME, lambda t: t.not_finite("volume") | (t.value("volume") < 0)),
    TickRule(REASON_INVALID_QUOTE,
             lambda t: _bad_quote(t, "bid") | _bad_quote(t, "ask")
             | (~t.missing("bid") & ~t.missing("ask") & (t.value("bid") > t.value("ask")))),
    TickRule(REASON_FUTURE, lambda t: t.after_received("ts")),
)

# Every reason a tick can be quarantined for at ingest.
TICK_REASONS: tuple[str, ...] = (*dict.fromkeys(r.reason for r in TICK_RULES), REASON_DUPLICATE, REASON_LATE)


@dataclass(frozen=True)
class Dedupe:
    """The first copy of a key is stored; later ones (in the same batch by arrival, or of a key
    already stored) are duplicates."""

    key: str = "msg_id"
    reason: str = REASON_DUPLICATE


@dataclass(frozen=True)
class Lateness:
    """A tick behind its feed's newest event time (as of before it) by more than the tolerance
    is late. Works on Spark columns, numpy arrays and plain numbers alike."""

    feed: tuple[str, ...] = ("source", "symbol")
    reason: str = REASON_LATE

    @staticmethod
    def is_late(ts: Any, newest: Any, tolerance: Any) -> Any:
        return ts < newest - tolerance


DEDUPE = Dedupe()
LATENESS = Lateness()


# -- the numpy engine (the live scorer) ------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(text: object) -> int | None:
    """An ISO-8601 timestamp as epoch microseconds (naive means UTC, the stream's session zone);
    None when it cannot be read."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _as_text(value: object) -> str | None:
    """What Spark's JSON reader makes of a value in a string field: strings as they are, other
    values as their JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ArrayTicks:
    """A batch of raw tick messages typed into numpy columns (``TickColumns`` for the rules).

    ``received_us``: each record's Kafka time, epoch microseconds; ``future_tolerance_us``: how
    far past it a tick's ``ts`` may be.
    """

    def __init__(self, messages: Sequence[bytes | None], received_us: np.ndarray, future_tolerance_us: int):
        records: list[dict | None] = []
        for message in messages:
            try:
                record = orjson.loads(message) if message else None
            except orjson.JSONDecodeError:
                record = None
            records.append(record if isinstance(record, dict) else None)
        rows = [r if r is not None else {} for r in records]
        n = len(rows)
        self.size = n
        self._received_us = np.asarray(received_us, dtype=np.int64)
        self._future_us = future_tolerance_us
        self._present: dict[str, np.ndarray] = {}
        self._values: dict[str, np.ndarray] = {}
        for field, kind in FIELD_TYPES.items():
            raw = [row.get(field) for row in rows]
            # Fast paths for the usual columns (all numbers, all null, all text) give the same
            # arrays as the general per-value typing below.
            kinds = set(map(type, raw))
            if kind == "number" and kinds <= {float, int}:
                present, values = np.ones(n, bool), np.array(raw, dtype=float)
            elif kind in ("number", "integer") and kinds <= {type(None)}:
                present = np.zeros(n, bool)
                values = np.full(n, math.nan) if kind == "number" else np.zeros(n, dtype=object)
            elif kind == "number":
                present = np.fromiter((_is_number(v) for v in raw), bool, n)
                values = np.array([v if p else math.nan for v, p in zip(raw, present, strict=True)], dtype=float)
            elif kind == "integer":
                present = np.fromiter((isinstance(v, int) and not isinstance(v, bool) for v in raw), bool, n)
                values = np.array([v if p else 0 for v, p in zip(raw, present, strict=True)], dtype=object)
            else:
                text = raw if kinds <= {str, type(None)} else [_as_text(v) for v in raw]
                present = np.fromiter((v is not None for v in text), bool, n)
                values = np.array(text, dtype=object)
                if kind == "time":
                    self._values[f"{field}_us"] = np.array([epoch_us(v) for v in text], dtype=object)
            self._present[field] = present
            self._values[field] = values
        any_field = np.zeros(n, bool)
        for present in self._present.values():
            any_field |= present
        self._unparsed = np.fromiter((r is None for r in records), bool, n) | ~any_field

    # -- TickColumns --------------------------------------------------------------------------------

    def unparsed(self) -> np.ndarray:
        return self._unparsed

    def missing(self, field: str) -> np.ndarray:
        return ~self._present[field]

    def value(self, field: str) -> np.ndarray:
        return self._values[field]

    def not_finite(self, field: str) -> np.ndarray:
        return self._present[field] & ~np.isfinite(self._values[field])

    def empty(self, field: str) -> np.ndarray:
        return np.fromiter((v == "" for v in self._values[field]), bool, self.size)

    def not_matching(self, field: str, pattern: str) -> np.ndarray:
        match = re.compile(pattern).match
        return np.fromiter((v is not None and match(v) is None for v in self._values[field]), bool, self.size)

    def not_one_of(self, field: str, values: Sequence[Any]) -> np.ndarray:
        allowed = set(values)
        return self._present[field] & np.fromiter((v not in allowed for v in self._values[field]), bool, self.size)

    def unreadable_time(self, field: str) -> np.ndarray:
        return np.fromiter((v is None for v in self._values[f"{field}_us"]), bool, self.size)

    def after_received(self, field: str) -> np.ndarray:
        stamps = self._values[f"{field}_us"]
        readable = ~self.unreadable_time(field)
        us = np.where(readable, stamps, 0).astype(np.int64)
        return readable & (us > self._received_us + self._future_us)

    # -- results ------------------------------------------------------------------------------------

    def reasons(self, rules: Sequence[TickRule] = TICK_RULES) -> np.ndarray:
        """Per tick, the first rule it breaks (None for a valid tick)."""
        reason = np.full(self.size, None, dtype=object)
        undecided = np.ones(self.size, bool)
        with np.errstate(invalid="ignore"):
            for rule in rules:
                hit = undecided & np.asarray(rule.broken(self), dtype=bool)
                reason[hit] = rule.reason
                undecided &= ~hit
        return reason

    def column(self, field: str) -> np.ndarray:
        """A field's typed values (times as epoch microseconds)."""
        return self._values[f"{field}_us"] if field in TIME_FIELDS else self._values[field]
