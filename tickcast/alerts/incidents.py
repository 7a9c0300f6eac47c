"""One rule's incidents for one subject: a pure state machine over observations.

An observation says whether the rule holds for the subject at an instant. The first one that
holds opens an incident and makes a "firing" alert (sent, or recorded as throttled when the
rule's previous message for the subject is too recent); observations that keep holding change
nothing; the first one that no longer holds closes the incident and, if the rule notifies
recoveries and the firing was sent, makes a "resolved" alert. The engine stores the state with
the alert in one transaction, so a restart resumes exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from tickcast.alerts.policy import as_utc, quiet_until, throttled
from tickcast.alerts.rules import RuleSpec

Phase = Literal["firing", "resolved", "test"]
# queued: to be delivered (at not_before at the earliest); throttled: recorded, never sent.
AlertStatus = Literal["queued", "throttled", "delivered", "partial", "dead"]


@dataclass(frozen=True)
class SubjectState:
    active: bool = False
    # When the open (or last) incident started: the id of its alerts.
    since: datetime | None = None
    # The newest message sent for this rule and subject (what the throttle counts from).
    last_sent_at: datetime | None = None
    # Whether the open incident's firing alert was sent (a resolved one is sent only then).
    firing_sent: bool = False


@dataclass(frozen=True)
class AlertDecision:
    phase: Phase
    status: AlertStatus
    incident_start: datetime
    at: datetime
    # Quiet hours: not delivered before this instant.
    not_before: datetime | None


def observe(rule: RuleSpec, state: SubjectState, holds: bool, at: datetime
            ) -> tuple[SubjectState, AlertDecision | None]:
    """The subject's next state after an observation at ``at``, and the alert it makes, if any."""
    at = as_utc(at)
    if holds and not state.active:
        if throttled(state.last_sent_at, at, rule.throttle_seconds):
            return (replace(state, active=True, since=at, firing_sent=False),
                    AlertDecision("firing", "throttled", at, at, None))
        return (SubjectState(active=True, since=at, last_sent_at=at, firing_sent=True),
                AlertDecision("firing", "queued", at, at, quiet_until(rule.quiet_hours, at)))
    if not holds and state.active:
        closed = replace(state, active=False)
        if not (rule.notify_resolved and state.firing_sent):
            return closed, None
        since = state.since or at
        return (replace(closed, last_sent_at=at),
                AlertDecision("resolved", "queued", since, at, quiet_until(rule.quiet_hours, at)))
    return state, None
