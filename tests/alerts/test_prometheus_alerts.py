"""Prometheus' alerts reach the alert engine: the pipeline monitor reports each firing alert as a
pipeline event (``prometheus_alert``) and resolves it once it stops, and the evaluator turns them
into one incident that opens and closes. Against a real Prometheus (Debian's binary) scraping a
stand-in target, with a rule that fires on it."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tickcast.alerts import prometheus_alerts
from tickcast.alerts.evaluate import Evaluator
from tickcast.alerts.monitor import PipelineMonitor
from tickcast.alerts.prometheus_alerts import FiringAlert, events, subject
from tickcast.alerts.rules import RuleSpec
from tickcast.alerts.store import AlertStore
from tickcast.core.events import PipelineEvent
from tickcast.core.settings import Settings
from tickcast.platform.processes import free_port, stop_process, wait_until

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PROMETHEUS = Path("/usr/bin/prometheus")  # Debian's package, installed by `make bootstrap`


# --- pure parts ----------------------------------------------------------------------------------


def test_the_subject_is_the_alert_and_its_labels_but_severity() -> None:
    labels = {"alertname": "TickcastTargetDown", "job": "api", "instance": "127.0.0.1:8000", "severity": "critical"}
    assert subject(labels) == "TickcastTargetDown{instance=127.0.0.1:8000,job=api}"
    assert subject({**labels, "alertstate": "firing", "__name__": "ALERTS"}) == subject(labels)
    assert subject({"alertname": "Bare"}) == "Bare"
    long = subject({"alertname": "TickcastKafkaLag", "topic": "t" * 200})
    other = subject({"alertname": "TickcastKafkaLag", "topic": "t" * 199})
    assert len(long) == len(other) == prometheus_alerts.SUBJECT_MAX and long != other


def test_firing_now_fires_and_fired_recently_resolves() -> None:
    down = {"alertname": "TickcastTargetDown", "job": "api", "instance": "a", "severity": "critical"}
    lag = {"alertname": "TickcastKafkaLag", "query": "ticks", "topic": "ticks", "severity": "bogus"}
    found = events([FiringAlert(down, {"summary": "api at a does not answer"}, "2026-12-06T11:59:00Z", "0")],
                   [{**down, "alertstate": "firing", "__name__": "ALERTS"}, {**lag, "alertstate": "firing"}], NOW)
    by_subject = {e.subject: e for e in found}
    assert len(found) == 2
    fired = by_subject[subject(down)]
    assert (fired.kind, fired.status, fired.severity) == ("prometheus_alert", "firing", "critical")
    assert fired.message == "TickcastTargetDown: api at a does not answer"
    resolved = by_subject[subject(lag)]
    # An unknown severity is a warning, not an invalid event.
    assert (resolved.status, resolved.severity) == ("resolved", "warning")
    assert events([], [], NOW) == []


def test_an_unreachable_prometheus_resolves_nothing_and_is_said_once(settings: Settings,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    settings = settings.model_copy(update={"alerts_from_prometheus": True, "alerts_monitor_seconds": 0.001,
                                           "prometheus_url": f"http://127.0.0.1:{free_port()}"})
    reported: list[PipelineEvent] = []
    ticks = iter(range(1000))
    # Each call a check: the clock moves a minute between calls.
    monitor = PipelineMonitor(settings, reported.append, clock=lambda: NOW + timedelta(minutes=next(ticks)))
    with caplog.at_level(logging.WARNING, logger="tickcast.alerts.monitor"):
        assert [monitor.check_if_due() for _ in range(3)] == [0, 0, 0]
    assert reported == []
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "not answering" in caplog.records[0].message


def test_off_by_setting(settings: Settings) -> None:
    assert PipelineMonitor(settings.model_copy(update={"alerts_from_prometheus": False}), print).prometheus is None


# --- against a real Prometheus -------------------------------------------------------------------


@dataclass
class Standin:
    url: str
    gauge: Gauge


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    """Prometheus on a free loopback port, scraping and evaluating every second a target whose
    gauge the test sets; its rule fires while the gauge is above 0."""
    root = tmp_path_factory.mktemp("prometheus")
    registry = CollectorRegistry()
    gauge = Gauge("tickcast_test_queue_depth", "A stand-in's queue", registry=registry)
    target_port = free_port()
    server, thread = start_http_server(target_port, addr="127.0.0.1", registry=registry)
    (root / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": [
        {"alert": "TickcastTestQueueDeep", "expr": "tickcast_test_queue_depth > 0",
         "labels": {"severity": "critical"}, "annotations": {"summary": "the queue holds {{ $value }}"}},
        # Another system's alert in the same Prometheus: not the engine's.
        {"alert": "OtherSystemQueueDeep", "expr": "tickcast_test_queue_depth > 0"}]}]}))
    (root / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(root / "rules.yml")],
        "scrape_configs": [{"job_name": "standin", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    port = free_port()
    with (root / "prometheus.log").open("w") as log_file:
        proc = subprocess.Popen([str(PROMETHEUS), f"--config.file={root / 'prometheus.yml'}",
                                 f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={root / 'data'}"],
                                stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="Prometheus ready", interval=0.2,
                   on_timeout=lambda: (root / "prometheus.log").read_text()[-2000:])
        yield Standin(url, gauge)
    finally:
        stop_process(proc, timeout=30)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.slow
def test_a_firing_rule_opens_an_incident_and_its_end_closes_it(prometheus_server: Standin, settings: Settings,
                                                                tmp_path: Path) -> None:
    settings = settings.model_copy(update={"alerts_from_prometheus": True, "alerts_monitor_seconds": 0.001,
                                           "prometheus_url": prometheus_server.url})
    reported: list[PipelineEvent] = []
    monitor = PipelineMonitor(settings, reported.append)
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.sqlite'}")
    store.add_rule(RuleSpec.model_validate({
        "name": "prometheus", "on_pipeline": {"kinds": ["prometheus_alert"], "min_severity": "critical"},
        "recipients": [{"channel": "sms", "address": "+15551234567"}], "notify_resolved": True,
        "throttle_seconds": 0}))
    evaluator = Evaluator(store, rules_ttl=0)

    def checked(status: str) -> bool:
        reported.clear()
        monitor.check_if_due()  # due at every poll: its interval is a millisecond
        evaluator.process([], reported)
        return any(e.kind == "prometheus_alert" and e.status == status for e in reported)

    try:
        prometheus_server.gauge.set(3)
        wait_until(lambda: checked("firing"), timeout=30, what="the alert firing", interval=0.5)
        [fired] = [e for e in reported if e.status == "firing"]
        assert fired.subject.startswith("TickcastTestQueueDeep{instance=127.0.0.1:") and fired.severity == "critical"
        assert fired.message == "TickcastTestQueueDeep: the queue holds 3"
        checked("firing")  # reported again while it lasts: still one incident
        [alert] = store.history()
        assert (alert["phase"], alert["subject"]) == ("firing", f"prometheus_alert:{fired.subject}")

        prometheus_server.gauge.set(0)
        wait_until(lambda: checked("resolved"), timeout=30, what="the alert resolved", interval=0.5)
        assert [(e.subject, e.status) for e in reported] == [(fired.subject, "resolved")]
        assert [a["phase"] for a in store.history()] == ["resolved", "firing"]

        # An engine started after the alert stopped still closes it: Prometheus remembers it fired.
        restarted: list[PipelineEvent] = []
        PipelineMonitor(settings, restarted.append).check_if_due()
        assert [(e.subject, e.status) for e in restarted] == [(fired.subject, "resolved")]
    finally:
        prometheus_server.gauge.set(0)
        store.close()
