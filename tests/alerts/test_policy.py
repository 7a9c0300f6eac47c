"""Throttling, quiet hours and deterministic ids, with a controlled clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from tickcast.alerts.policy import alert_id, quiet_until, throttled
from tickcast.alerts.rules import QuietHours

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def test_throttle_counts_from_the_last_message():
    assert not throttled(None, T0, 300)
    assert throttled(T0, T0 + timedelta(seconds=299), 300)
    assert not throttled(T0, T0 + timedelta(seconds=300), 300)
    assert not throttled(T0, T0 + timedelta(seconds=1), 0)


def test_throttle_takes_naive_instants_as_utc():
    assert throttled(T0.replace(tzinfo=None), T0 + timedelta(seconds=10), 60)


def test_quiet_hours_across_midnight_end_the_next_morning():
    quiet = QuietHours(start=time(22, 0), end=time(7, 0), timezone="America/New_York")
    # 23:30 in New York on 4 December (EST, UTC-5) -> 07:00 on the 5th = 12:00 UTC.
    late = datetime(2026, 12, 5, 4, 30, tzinfo=UTC)
    assert quiet_until(quiet, late) == datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    # 03:00 on the 5th -> the same morning.
    early = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    assert quiet_until(quiet, early) == datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    # 07:00 sharp and the afternoon are outside.
    assert quiet_until(quiet, datetime(2026, 12, 5, 12, 0, tzinfo=UTC)) is None
    assert quiet_until(quiet, datetime(2026, 12, 5, 20, 0, tzinfo=UTC)) is None


def test_quiet_hours_within_one_day():
    quiet = QuietHours(start=time(12, 0), end=time(13, 30), timezone="Europe/London")
    assert quiet_until(quiet, datetime(2026, 12, 4, 12, 15, tzinfo=UTC)) == datetime(2026, 12, 4, 13, 30, tzinfo=UTC)
    assert quiet_until(quiet, datetime(2026, 12, 4, 11, 59, tzinfo=UTC)) is None


def test_quiet_hours_end_in_local_time_across_a_daylight_saving_change():
    # New York springs forward on 8 March 2026: the night starts at EST (UTC-5), ends at EDT (UTC-4).
    quiet = QuietHours(start=time(22, 0), end=time(7, 0), timezone="America/New_York")
    night = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)  # 23:00 EST on the 7th
    assert quiet_until(quiet, night) == datetime(2026, 3, 8, 11, 0, tzinfo=UTC)  # 07:00 EDT


def test_alert_ids_are_deterministic_and_distinct():
    first = alert_id(1, "S0001", "firing", T0)
    assert first == alert_id(1, "S0001", "firing", T0.astimezone(UTC))
    assert first == alert_id(1, "S0001", "firing", T0.replace(tzinfo=None))
    others = {alert_id(2, "S0001", "firing", T0), alert_id(1, "S0002", "firing", T0),
              alert_id(1, "S0001", "resolved", T0), alert_id(1, "S0001", "firing", T0 + timedelta(microseconds=1))}
    assert first not in others and len(others) == 4
