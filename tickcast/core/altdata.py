"""Alternative data: the kinds, the fields of a record, when a value becomes usable, and the
checks a record passes before it is stored.

Point in time is the one rule that matters here. Every stored row carries ``available_at``, the
first moment anyone outside the company could have known it, computed by ``available_at`` below
from what the provider says (or, where it says nothing, conservatively later). A feature row may
use a value only if ``available_at <= decision_time`` of its bar (``decision_time``): for daily
bars that is the US close of the bar's day, not the end of the UTC day, because a report
released after the close cannot move a prediction made at the close.

Everything that reads or writes alternative data takes its names, keys and rules from here:
the collectors (``tickcast.altdata``), the tables (``delta/tables.json``), the v2 features
(``tickcast.features.alt``) and their no-lookahead tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tickcast.core.symbols import SYMBOL_PATTERN


@dataclass(frozen=True)
class AltKind:
    name: str
    # Natural key: a record collected again (a re-run, a revision) replaces its row.
    key: tuple[str, ...]
    description: str

    @property
    def table(self) -> str:
        return f"alt_{self.name}"

    @property
    def stage(self) -> str:
        """The quarantine stage of this kind's rejected records."""
        return self.table


NEWS = AltKind("news", ("news_id",), "headlines per symbol, scored for sentiment offline")
MACRO = AltKind("macro", ("series_id", "observation_date"), "macro series, first release of each observation")
EARNINGS = AltKind("earnings", ("symbol", "report_date"), "the earnings calendar with EPS and revenue surprises")
FUNDAMENTALS = AltKind("fundamentals", ("symbol", "metric", "period_end", "form"), "reported fundamentals by filing")

KINDS: dict[str, AltKind] = {kind.name: kind for kind in (NEWS, MACRO, EARNINGS, FUNDAMENTALS)}
# Columns every stored row carries besides its kind's own: where it came from and which run wrote it.
PROVENANCE_COLUMNS = ("provider", "run_key", "collected_at")

# --- when a value is usable -------------------------------------------------------------------

# The US regular session closes at 20:00 UTC in summer and 21:00 in winter; the earlier one is
# the decision time of a daily bar all year (stricter in winter, never late).
DAILY_DECISION_UTC = time(20, 0)
# A report date is taken to be known this long before it when the source does not say when it
# was announced (companies announce two to four weeks ahead; the shorter is the safer guess).
EARNINGS_DATE_NOTICE = timedelta(days=14)
# When in a day an earnings release lands, by the calendar's hour code: before the open (bmo)
# at 12:00 UTC, after the close (amc) at 21:00 UTC, during market hours (dmh) at 17:00 UTC; with
# no hour, at the end of the day.
EARNINGS_RELEASE_UTC = {"bmo": time(12, 0), "amc": time(21, 0), "dmh": time(17, 0)}
# Filings and first releases without a time are usable from the next UTC midnight.
UNTIMED_DELAY = timedelta(days=1)
# A published time more than this after collection is refused (clock or parsing errors).
FUTURE_TOLERANCE = timedelta(minutes=5)


def decision_time(window_start: datetime, window_end: datetime, daily: bool) -> datetime:
    """The moment a bar's prediction is made, and so the latest ``available_at`` it may use."""
    if daily:
        return datetime.combine(window_start.date(), DAILY_DECISION_UTC, tzinfo=UTC)
    return window_end


def earnings_release_time(report_date: date, hour: str | None) -> datetime:
    at = EARNINGS_RELEASE_UTC.get((hour or "").lower())
    if at is None:
        return datetime.combine(report_date, time(0), tzinfo=UTC) + UNTIMED_DELAY
    return datetime.combine(report_date, at, tzinfo=UTC)


def untimed_release(day: date) -> datetime:
    """A value published on ``day`` with no time given (a FRED release, an EDGAR filing date)."""
    return datetime.combine(day, time(0), tzinfo=UTC) + UNTIMED_DELAY


# --- the fields of each kind, and the checks --------------------------------------------------

_SYMBOL = re.compile(SYMBOL_PATTERN)
SERIES_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
HEADLINE_MAX_CHARS = 1_000
FUNDAMENTAL_METRICS = ("eps_diluted", "revenue", "net_income", "shares_outstanding", "total_assets")
FORMS = ("10-K", "10-Q", "20-F", "40-F", "6-K", "8-K", "10-K/A", "10-Q/A")


class Rejected(ValueError):
    """A record that is not stored; ``reason`` is what the quarantine says."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_time(value: Any, field: str) -> datetime:
    """An aware UTC datetime from an ISO 8601 string, a date, or epoch seconds."""
    try:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            parsed = datetime.fromtimestamp(value, tz=UTC)
        elif isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        else:
            raise ValueError(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise Rejected(f"invalid_timestamp:{field}") from exc
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if not 1970 <= parsed.year <= 2100:
        raise Rejected(f"invalid_timestamp:{field}")
    return parsed


def parse_date(value: Any, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise Rejected(f"invalid_timestamp:{field}") from exc
    raise Rejected(f"invalid_timestamp:{field}")


def _number(record: Mapping[str, Any], field: str, required: bool = False) -> float | None:
    value = record.get(field)
    if value is None or (isinstance(value, str) and value.strip() in ("", ".", "NaN", "null", "None")):
        # FRED writes "." for a missing observation.
        if required:
            raise Rejected(f"missing_or_invalid:{field}")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise Rejected(f"missing_or_invalid:{field}") from exc
    if isinstance(value, bool) or not math.isfinite(number):
        raise Rejected(f"missing_or_invalid:{field}")
    return number


def _text(record: Mapping[str, Any], field: str, required: bool = True, limit: int = 2_000) -> str | None:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Rejected(f"missing_or_invalid:{field}")
        return None
    if not isinstance(value, str):
        raise Rejected(f"missing_or_invalid:{field}")
    return value.strip()[:limit]


def _symbol(record: Mapping[str, Any]) -> str:
    symbol = _text(record, "symbol")
    assert symbol is not None
    if not _SYMBOL.match(symbol):
        raise Rejected("invalid_symbol")
    return symbol.upper()


def _not_future(at: datetime, field: str, now: datetime) -> datetime:
    if at > now + FUTURE_TOLERANCE:
        raise Rejected(f"{field}_in_future")
    return at


def validate(kind: AltKind, record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The stored row of one record (its kind's columns and ``available_at``), or ``Rejected``.

    ``record`` uses the normalised field names (the adapters map each provider's names onto
    them); ``now`` is the collection time, against which publication times are checked.
    """
    if not isinstance(record, Mapping):
        raise Rejected("malformed_record")
    if kind is NEWS:
        published = _not_future(parse_time(record.get("published_at"), "published_at"), "published_at", now)
        headline = _text(record, "headline", limit=HEADLINE_MAX_CHARS)
        news_id = _text(record, "news_id", limit=200)
        return {"news_id": news_id, "symbol": _symbol(record), "published_at": published, "headline": headline,
                "source": _text(record, "source", required=False, limit=200),
                "url": _text(record, "url", required=False, limit=2_000), "available_at": published}
    if kind is MACRO:
        series = _text(record, "series_id", limit=64)
        assert series is not None
        if not SERIES_PATTERN.match(series):
            raise Rejected("missing_or_invalid:series_id")
        observed = parse_date(record.get("observation_date"), "observation_date")
        value = _number(record, "value", required=True)
        if record.get("published_at") not in (None, ""):
            available = parse_time(record["published_at"], "published_at")
            released_on = available.date()
        else:
            released_on = parse_date(record.get("release_date"), "release_date")
            available = untimed_release(released_on)
        if released_on < observed:
            raise Rejected("published_before_observed")
        return {"series_id": series.upper(), "observation_date": observed, "value": value,
                "available_at": _not_future(available, "published_at", now + UNTIMED_DELAY)}
    if kind is EARNINGS:
        report_date = parse_date(record.get("report_date"), "report_date")
        hour = (_text(record, "hour", required=False, limit=8) or "").lower() or None
        eps_estimate, eps_actual = _number(record, "eps_estimate"), _number(record, "eps_actual")
        revenue_estimate, revenue_actual = _number(record, "revenue_estimate"), _number(record, "revenue_actual")
        released = earnings_release_time(report_date, hour)
        if (eps_actual is not None or revenue_actual is not None) and released > now + UNTIMED_DELAY:
            raise Rejected("actuals_before_release")
        if record.get("date_known_at") not in (None, ""):
            known = parse_time(record["date_known_at"], "date_known_at")
        else:
            known = datetime.combine(report_date, time(0), tzinfo=UTC) - EARNINGS_DATE_NOTICE
        return {"symbol": _symbol(record), "report_date": report_date, "hour": hour,
                "fiscal_period": _text(record, "fiscal_period", required=False, limit=16),
                "eps_estimate": eps_estimate, "eps_actual": eps_actual, "revenue_estimate": revenue_estimate,
                "revenue_actual": revenue_actual, "eps_surprise": surprise(eps_actual, eps_estimate),
                "revenue_surprise": surprise(revenue_actual, revenue_estimate),
                "date_known_at": min(known, released), "available_at": released}
    if kind is FUNDAMENTALS:
        metric = _text(record, "metric", limit=64)
        if metric not in FUNDAMENTAL_METRICS:
            raise Rejected("missing_or_invalid:metric")
        form = _text(record, "form", limit=16)
        if form not in FORMS:
            raise Rejected("missing_or_invalid:form")
        filed = parse_date(record.get("filed"), "filed")
        period_end = parse_date(record.get("period_end"), "period_end")
        if filed < period_end:
            raise Rejected("filed_before_period_end")
        return {"symbol": _symbol(record), "metric": metric, "period_end": period_end, "form": form,
                "value": _number(record, "value", required=True), "filed": filed,
                "available_at": _not_future(untimed_release(filed), "filed", now + UNTIMED_DELAY)}
    raise KeyError(kind.name)


def surprise(actual: float | None, estimate: float | None) -> float | None:
    """(actual - estimate) / |estimate|; None without both or with an estimate of zero."""
    if actual is None or estimate is None or estimate == 0:
        return None
    return (actual - estimate) / abs(estimate)
