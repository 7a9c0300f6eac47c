"""One rule's incidents for one subject: one message per incident, throttling, recoveries and
quiet hours, driven by a controlled sequence of observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tickcast.alerts.incidents import SubjectState, observe
from tickcast.alerts.rules import RuleSpec

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def rule(**fields) -> RuleSpec:
    return RuleSpec.model_validate({"name": "r", "on_signal": {"signal": "BUY"},
                                    "recipients": [{"channel": "sms", "address": "+15551234567"}], **fields})


def run(spec: RuleSpec, observations: list[tuple[int, bool]]):
    """(seconds after T0, holds) in order -> the decisions made, as (seconds, phase, status)."""
    state, made = SubjectState(), []
    for seconds, holds in observations:
        state, decision = observe(spec, state, holds, T0 + timedelta(seconds=seconds))
        if decision is not None:
            made.append((seconds, decision.phase, decision.status))
    return state, made


def test_an_incident_makes_one_message_however_long_it_lasts():
    _, made = run(rule(), [(0, False), (10, True), (20, True), (30, True), (40, False), (50, False)])
    assert made == [(10, "firing", "queued")]


def test_recovery_is_announced_when_asked_for_with_the_incident_start():
    spec = rule(notify_resolved=True)
    state = SubjectState()
    state, firing = observe(spec, state, True, T0)
    state, still = observe(spec, state, True, T0 + timedelta(seconds=5))
    state, resolved = observe(spec, state, False, T0 + timedelta(seconds=60))
    assert firing is not None and still is None and resolved is not None
    assert (resolved.phase, resolved.status, resolved.incident_start, resolved.at) == (
        "resolved", "queued", T0, T0 + timedelta(seconds=60))
    assert not state.active and state.last_sent_at == T0 + timedelta(seconds=60)


def test_a_new_incident_within_the_throttle_is_recorded_not_sent():
    spec = rule(throttle_seconds=300)
    _, made = run(spec, [(0, True), (60, False), (120, True), (180, False), (400, True)])
    assert made == [(0, "firing", "queued"), (120, "firing", "throttled"), (400, "firing", "queued")]


def test_a_throttled_incident_sends_no_recovery():
    spec = rule(throttle_seconds=300, notify_resolved=True)
    _, made = run(spec, [(0, True), (60, False), (120, True), (180, False)])
    assert made == [(0, "firing", "queued"), (60, "resolved", "queued"), (120, "firing", "throttled")]


def test_flapping_is_throttled_from_the_recovery_message_too():
    spec = rule(throttle_seconds=100, notify_resolved=True)
    _, made = run(spec, [(0, True), (50, False), (120, True), (160, True), (200, False), (260, True)])
    assert made == [(0, "firing", "queued"), (50, "resolved", "queued"), (120, "firing", "throttled"),
                    (260, "firing", "queued")]


def test_zero_throttle_sends_every_incident():
    _, made = run(rule(throttle_seconds=0), [(0, True), (1, False), (2, True), (3, False), (4, True)])
    assert [m[2] for m in made] == ["queued", "queued", "queued"]


def test_quiet_hours_hold_the_message_until_they_end():
    spec = rule(quiet_hours={"start": "22:00", "end": "07:00", "timezone": "UTC"})
    _, night = observe(spec, SubjectState(), True, datetime(2026, 12, 4, 23, 0, tzinfo=UTC))
    _, day = observe(spec, SubjectState(), True, datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    assert night is not None and night.status == "queued"
    assert night.not_before == datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
    assert day is not None and day.not_before is None
