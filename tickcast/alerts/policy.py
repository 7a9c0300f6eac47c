"""When an alert is sent, and under which id: throttling, quiet hours and deterministic ids.
Pure functions of their arguments; the time is always passed in (the engine
reads it from a clock it is given, the tests from a controlled one)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tickcast.alerts.rules import QuietHours

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC instant; a naive one is taken as UTC (how the tables store them)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def alert_id(rule_id: int, subject: str, phase: str, incident_start: datetime) -> str:
    """The alert's id: the same rule, subject, phase and incident give the same id, so an event
    consumed twice, or re-evaluated after a restart, cannot make a second alert."""
    key = f"{rule_id}|{subject}|{phase}|{as_utc(incident_start).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def delivery_id(alert: str, channel: str, address: str) -> str:
    return hashlib.sha256(f"{alert}|{channel}|{address}".encode()).hexdigest()[:32]


def throttled(last_sent_at: datetime | None, at: datetime, throttle_seconds: int) -> bool:
    """Whether a message for the same rule and subject went out less than the throttle ago."""
    if last_sent_at is None or throttle_seconds <= 0:
        return False
    return as_utc(at) - as_utc(last_sent_at) < timedelta(seconds=throttle_seconds)


def quiet_until(quiet: QuietHours | None, at: datetime) -> datetime | None:
    """If ``at`` falls within the quiet hours, the UTC instant they end (when the message may be
    sent); otherwise None. Spans across midnight (22:00-07:00) and daylight-saving changes are
    taken in the rule's time zone."""
    from zoneinfo import ZoneInfo

    if quiet is None:
        return None
    zone = ZoneInfo(quiet.timezone)
    local = as_utc(at).astimezone(zone)
    now = local.timetz().replace(tzinfo=None)
    overnight = quiet.start > quiet.end
    inside = (now >= quiet.start or now < quiet.end) if overnight else (quiet.start <= now < quiet.end)
    if not inside:
        return None
    end_day = local.date() + timedelta(days=1) if overnight and now >= quiet.start else local.date()
    # A wall time that a DST change skips resolves forward, as zoneinfo does.
    end = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end.astimezone(UTC)

