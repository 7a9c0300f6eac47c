"""The pipeline monitor: from the progress files every streaming part writes (the ``ticks`` and
``bars`` queries, the live scorer), whether each is stopped or falling behind, reported as
pipeline events at every check - ``firing`` while it lasts, ``resolved`` otherwise - so the
engine's incidents open once and close once whatever the monitor remembers across restarts.

A part that never wrote progress is not reported: it is not part of this platform (yet).

With ``alerts_from_prometheus`` each check also reports the alerts of Prometheus' rules
(``tickcast.alerts.prometheus_alerts``), under the same rule: firing while they fire, resolved after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from tickcast.alerts.policy import Clock, utc_now
from tickcast.alerts.prometheus_alerts import PrometheusAlerts, PrometheusUnreachable
from tickcast.catalog.progress import last_seen, read_progress
from tickcast.core.events import PipelineEvent
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.alerts.monitor")

# The parts watched, and the setting of each one's trigger (how long a batch should take).
WATCHED: dict[str, str | None] = {"ticks": "ingest_trigger_seconds", "bars": "bars_trigger_seconds", "scorer": None}


def check(settings: Settings, now: datetime) -> list[PipelineEvent]:
    """The events of one check, pure but for reading the progress files."""
    events: list[PipelineEvent] = []
    progress = read_progress(settings)
    for name, trigger_setting in WATCHED.items():
        found = progress.get(name)
        if found is None:
            continue
        seen = last_seen(found)
        subject = name if name == "scorer" else f"ingest:{name}"
        age = (now - seen).total_seconds() if seen is not None else None
        stopped = age is None or age > settings.alerts_stall_seconds
        events.append(PipelineEvent(
            kind="ingest_stopped", subject=subject, severity="critical", status="firing" if stopped else "resolved",
            message=(f"{name} has shown no progress for {age:.0f} s" if age is not None
                     else f"{name} has never reported progress") if stopped else f"{name} is making progress",
            at=now, details={"last_seen": seen.isoformat() if seen else None},
        ))
        if stopped:
            continue
        behind_by = kafka_behind(found)
        if behind_by is not None:
            lagging = behind_by > settings.alerts_lag_messages
            events.append(PipelineEvent(
                kind="kafka_lag", subject=subject, severity="warning", status="firing" if lagging else "resolved",
                message=(f"{name} is {behind_by:,} messages behind its topic (bound {settings.alerts_lag_messages:,})"
                         if lagging else f"{name} is {behind_by:,} messages behind its topic"),
                at=now, details={"messages_behind": behind_by},
            ))
        if trigger_setting is None:
            continue
        trigger = float(getattr(settings, trigger_setting))
        duration_ms = (found.get("durationMs") or {}).get("triggerExecution")
        if not isinstance(duration_ms, int | float):
            continue
        behind = duration_ms / 1000 > settings.alerts_behind_factor * trigger
        events.append(PipelineEvent(
            kind="ingest_behind", subject=subject, severity="warning", status="firing" if behind else "resolved",
            message=(f"{name} batches take {duration_ms / 1000:.1f} s against a {trigger:g} s trigger"
                     if behind else f"{name} keeps up with its trigger"),
            at=now, details={"batch_seconds": round(duration_ms / 1000, 3), "trigger_seconds": trigger},
        ))
    return events


def kafka_behind(progress: dict) -> int | None:
    """Messages between what a query's last batch read and the newest its Kafka source saw
    then; None for a query without a Kafka source."""
    behind = None
    for source in progress.get("sources") or []:
        latest, end = source.get("latestOffset"), source.get("endOffset")
        if not isinstance(latest, dict) or not isinstance(end, dict):
            continue
        for topic, partitions in latest.items():
            ends = end.get(topic) or {}
            if not isinstance(partitions, dict):
                continue
            for partition, offset in partitions.items():
                if isinstance(offset, int) and isinstance(ends.get(partition), int):
                    behind = (behind or 0) + max(offset - ends[partition], 0)
    return behind


class PipelineMonitor:
    def __init__(self, settings: Settings, report: Callable[[PipelineEvent], None], *, clock: Clock = utc_now,
                 prometheus: PrometheusAlerts | None = None):
        self.settings = settings
        self.report = report
        self.clock = clock
        self.prometheus = prometheus if prometheus is not None else prometheus_for(settings)
        self._prometheus_down: str | None = None
        self._next: datetime | None = None

    def check_if_due(self) -> int:
        from datetime import timedelta

        now = self.clock()
        if self._next is not None and now < self._next:
            return 0
        self._next = now + timedelta(seconds=self.settings.alerts_monitor_seconds)
        events = check(self.settings, now) + self._prometheus_events(now)
        for event in events:
            self.report(event)
        return len(events)

    def _prometheus_events(self, now: datetime) -> list[PipelineEvent]:
        """The alerts of Prometheus' rules; none while it does not answer (unknown is not resolved),
        which is said once when it stops answering and once when it is back."""
        if self.prometheus is None:
            return []
        try:
            events = self.prometheus.events(now)
        except PrometheusUnreachable as exc:
            if self._prometheus_down is None:
                log.warning("cannot read Prometheus' alerts: %s", exc)
            self._prometheus_down = str(exc)
            return []
        if self._prometheus_down is not None:
            log.info("Prometheus' alerts readable again")
            self._prometheus_down = None
        return events


def prometheus_for(settings: Settings) -> PrometheusAlerts | None:
    """The reader of Prometheus' alerts the settings ask for (``alerts_from_prometheus``)."""
    if not settings.alerts_from_prometheus:
        return None
    return PrometheusAlerts(settings.prometheus_base_url, timeout=settings.alerts_prometheus_timeout_seconds,
                            lookback_seconds=settings.alerts_prometheus_lookback_seconds,
                            prefix=settings.alerts_prometheus_alert_prefix)
