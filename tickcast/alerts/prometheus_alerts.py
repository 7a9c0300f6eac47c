"""Prometheus' alerts as pipeline events: what the alerting rules of ``infra/prometheus/`` find
reaches the alert engine like any part's report, as events of kind ``prometheus_alert``.

The pipeline monitor asks Prometheus at each of its checks, rather than Prometheus pushing to
the engine (``alerting.alertmanagers``), because the engine then needs no server of its own, an
engine that was down loses nothing (it asks again when it is back), and the monitor's rule holds
for these events too: every check reports ``firing`` for each alert that fires now and
``resolved`` for each that fired within the look-back and no longer does. Both answers come from
Prometheus (``/api/v1/alerts``, and its ``ALERTS`` series for the recent past), so nothing is
remembered here and a restarted engine still closes an incident whose alert stopped while it was
away. A resolved event for an incident that is not open changes nothing (``incidents.observe``).

Only the alerts whose name starts with ``alerts_prometheus_alert_prefix`` (those of
``infra/prometheus/`` are all ``Tickcast...``) are read: a Prometheus of the operator's own may
hold the alerts of other systems. One incident per alert and label set: the subject is the alert's name and its labels but
``severity`` (``TickcastTargetDown{instance=127.0.0.1:9191,job=pipeline}``), cut to the subject's
bound with a digest of the whole when longer.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tickcast.core.events import SEVERITY_ORDER, PipelineEvent

log = logging.getLogger("tickcast.alerts.prometheus")

KIND = "prometheus_alert"
SUBJECT_MAX = 100
# Labels that name no incident: the state of the ALERTS series, the severity (an alert whose
# severity is raised stays one incident).
NOT_SUBJECT = frozenset({"__name__", "alertname", "alertstate", "severity"})


class PrometheusUnreachable(RuntimeError):
    """Prometheus did not answer with its JSON: whether an alert fires is unknown."""


@dataclass(frozen=True)
class FiringAlert:
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    active_at: str | None = None
    value: str | None = None


def subject(labels: dict[str, str]) -> str:
    name = labels.get("alertname") or "alert"
    rest = ",".join(f"{key}={value}" for key, value in sorted(labels.items()) if key not in NOT_SUBJECT)
    text = f"{name}{{{rest}}}" if rest else name
    if len(text) <= SUBJECT_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{text[:SUBJECT_MAX - len(digest) - 1]}~{digest}"


def severity(labels: dict[str, str]) -> str:
    found = labels.get("severity", "")
    return found if found in SEVERITY_ORDER else "warning"


def firing_event(alert: FiringAlert, now: datetime) -> PipelineEvent:
    name = alert.labels.get("alertname") or "alert"
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or f"{name} fires"
    return PipelineEvent.reported(KIND, subject(alert.labels), "firing", f"{name}: {summary}",
                                  severity=severity(alert.labels), at=now,
                                  details={"labels": alert.labels, "active_at": alert.active_at, "value": alert.value})


def resolved_event(labels: dict[str, str], now: datetime) -> PipelineEvent:
    name = labels.get("alertname") or "alert"
    return PipelineEvent.reported(KIND, subject(labels), "resolved", f"{name} no longer fires",
                                  severity=severity(labels), at=now, details={"labels": labels})


def events(firing: list[FiringAlert], recent: list[dict[str, str]], now: datetime) -> list[PipelineEvent]:
    """One check's events: ``firing`` for each alert firing now, ``resolved`` for each label set
    of ``recent`` (alerts that fired within the look-back) whose subject no longer fires."""
    found = [firing_event(alert, now) for alert in firing]
    seen = {event.subject for event in found}
    for labels in recent:
        name = subject(labels)
        if name not in seen:
            seen.add(name)
            found.append(resolved_event(labels, now))
    return found


class PrometheusAlerts:
    """Prometheus' HTTP API as the monitor reads it: synchronous, each request within ``timeout``."""

    def __init__(self, url: str, *, timeout: float, lookback_seconds: float, prefix: str = ""):
        import httpx

        self.url = url.rstrip("/")
        self.lookback_seconds = lookback_seconds
        self.prefix = prefix
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        import httpx

        try:
            response = self._http.get(path, params=params)
            document = response.json()
        except httpx.HTTPError as exc:
            raise PrometheusUnreachable(f"Prometheus at {self.url} is not answering ({type(exc).__name__})") from exc
        except ValueError:
            raise PrometheusUnreachable(
                f"{self.url} answered HTTP {response.status_code} without Prometheus' JSON") from None
        if not isinstance(document, dict) or document.get("status") != "success":
            error = document.get("error") if isinstance(document, dict) else None
            raise PrometheusUnreachable(f"Prometheus at {self.url} answered {path} with an error: {error}")
        return document.get("data") or {}

    def firing(self) -> list[FiringAlert]:
        """The alerts firing now (not those still pending their ``for``)."""
        data = self._get("/api/v1/alerts")
        return [FiringAlert({str(k): str(v) for k, v in (a.get("labels") or {}).items()},
                            {str(k): str(v) for k, v in (a.get("annotations") or {}).items()},
                            a.get("activeAt"), a.get("value"))
                for a in data.get("alerts") or []
                if a.get("state") == "firing" and str((a.get("labels") or {}).get("alertname", "")).startswith(self.prefix)]

    def recent_query(self) -> str:
        """PromQL: every alert that fired at some point within the look-back (``ALERTS`` keeps
        each alert's state as a series, with the alert's labels)."""
        return f'last_over_time(ALERTS{{alertstate="firing"}}[{int(self.lookback_seconds)}s])'

    def recently_fired(self) -> list[dict[str, str]]:
        """The label sets of the alerts that fired at some point within the look-back."""
        data = self._get("/api/v1/query", {"query": self.recent_query()})
        found = [{str(k): str(v) for k, v in (item.get("metric") or {}).items()} for item in data.get("result") or []]
        return [labels for labels in found if labels.get("alertname", "").startswith(self.prefix)]

    def events(self, now: datetime) -> list[PipelineEvent]:
        return events(self.firing(), self.recently_fired(), now)

    def close(self) -> None:
        self._http.close()
