"""The pipeline monitor reads the progress files the streaming parts write: a part unseen for
longer than the stall bound is reported stopped, one whose batches take too long behind, an
idle one (heartbeats only) is alive, and a part that never ran is not reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tickcast.alerts.monitor import PipelineMonitor, check
from tickcast.catalog.progress import ProgressFile, progress_path

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def write(settings, program: str, name: str, *, seconds_ago: float, batch_ms: float = 500, heartbeat_ago=None):
    file = ProgressFile(progress_path(settings, program))
    file.record(name, {"name": name, "timestamp": (NOW - timedelta(seconds=seconds_ago)).isoformat(),
                       "durationMs": {"triggerExecution": batch_ms}})
    if heartbeat_ago is not None:
        file.heartbeat(name, (NOW - timedelta(seconds=heartbeat_ago)).isoformat().replace("+00:00", "Z"))


def states(events) -> dict[tuple[str, str], str]:
    return {(e.kind, e.subject): e.status for e in events}


def test_stopped_behind_idle_and_absent_parts(settings):
    settings = settings.model_copy(update={"alerts_stall_seconds": 60, "ingest_trigger_seconds": 1.0,
                                           "bars_trigger_seconds": 2.0, "alerts_behind_factor": 3.0})
    assert check(settings, NOW) == []  # nothing ever ran
    write(settings, "ingest", "ticks", seconds_ago=300)  # stopped five minutes ago
    write(settings, "bars", "bars", seconds_ago=5, batch_ms=7000)  # alive, 7 s batches for a 2 s trigger
    write(settings, "scorer", "scorer", seconds_ago=400, heartbeat_ago=3)  # idle but alive
    assert states(check(settings, NOW)) == {
        ("ingest_stopped", "ingest:ticks"): "firing",
        ("ingest_stopped", "ingest:bars"): "resolved", ("ingest_behind", "ingest:bars"): "firing",
        ("ingest_stopped", "scorer"): "resolved",
    }
    stopped = next(e for e in check(settings, NOW) if e.subject == "ingest:ticks")
    assert stopped.severity == "critical" and "no progress for 300 s" in stopped.message  # 299.5 s: its batch ran 0.5 s

    write(settings, "ingest", "ticks", seconds_ago=1)
    write(settings, "bars", "bars", seconds_ago=1, batch_ms=1500)
    assert set(states(check(settings, NOW)).values()) == {"resolved"}


def test_the_monitor_checks_at_its_interval(settings):
    write(settings, "ingest", "ticks", seconds_ago=1)
    now = [NOW]
    reported = []
    monitor = PipelineMonitor(settings.model_copy(update={"alerts_monitor_seconds": 10}), reported.append,
                              clock=lambda: now[0])
    assert monitor.check_if_due() == 2 and monitor.check_if_due() == 0
    now[0] = NOW + timedelta(seconds=10)
    assert monitor.check_if_due() == 2 and len(reported) == 4


def test_kafka_lag_past_the_bound(settings):
    settings = settings.model_copy(update={"alerts_lag_messages": 1000})
    file = ProgressFile(progress_path(settings, "ingest"))
    source = {"description": "KafkaV2[Subscribe[ticks]]", "endOffset": {"ticks": {"0": 100, "1": 200}},
              "latestOffset": {"ticks": {"0": 900, "1": 1500}}}
    file.record("ticks", {"name": "ticks", "timestamp": NOW.isoformat(), "sources": [source],
                          "durationMs": {"triggerExecution": 100}})
    [lag] = [e for e in check(settings, NOW) if e.kind == "kafka_lag"]
    assert (lag.status, lag.details["messages_behind"]) == ("firing", 2100)
    source["latestOffset"] = {"ticks": {"0": 150, "1": 200}}
    file.record("ticks", {"name": "ticks", "timestamp": NOW.isoformat(), "sources": [source]})
    [lag] = [e for e in check(settings, NOW) if e.kind == "kafka_lag"]
    assert (lag.status, lag.details["messages_behind"]) == ("resolved", 50)


def test_a_long_batch_counts_from_its_end(settings):
    """A progress is stamped with its batch's start: a 50 s batch that began 70 s ago ended 20 s ago."""
    settings = settings.model_copy(update={"alerts_stall_seconds": 60})
    write(settings, "ingest", "ticks", seconds_ago=70, batch_ms=50_000)
    [stopped] = [e for e in check(settings, NOW) if e.kind == "ingest_stopped"]
    assert stopped.status == "resolved"
