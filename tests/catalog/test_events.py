"""Pipeline events on Kafka: what a part reports arrives as the contract, and a condition
checked every batch is published on a change or once a minute, not once a check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from tickcast.catalog.events import EventPublisher, StateReporter, parse_event
from tickcast.core.events import PipelineEvent


class Recorder:
    def __init__(self):
        self.events: list[PipelineEvent] = []

    def report(self, event: PipelineEvent) -> None:
        self.events.append(event)


def test_state_reporter_publishes_changes_and_a_reminder(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("tickcast.catalog.events.time.monotonic", lambda: clock[0])
    recorder = Recorder()
    reporter = StateReporter(recorder, "ingest:ticks", repeat_seconds=60)  # type: ignore[arg-type]
    for firing in (False, False, True, True, True):
        reporter.state("quarantine_spike", firing, "m")
        clock[0] += 1
    clock[0] += 60
    reporter.state("quarantine_spike", True, "m")
    assert [e.status for e in recorder.events] == ["resolved", "firing", "firing"]
    assert {e.subject for e in recorder.events} == {"ingest:ticks"}


def test_published_events_arrive_as_the_contract(base_settings, kafka_bootstrap):
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: a dropped client fails its futures
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    settings = base_settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap, "topic_alerts": topic})
    publisher = EventPublisher(settings, "events")
    sent = PipelineEvent(kind="quality_failed", subject="ingest:bars", severity="critical", message="3 rows fail",
                         at=datetime(2026, 12, 4, 15, 0, tzinfo=UTC), details={"rows_failed": 3})
    publisher.report(sent)
    assert publisher.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received = []
    for _ in range(30):
        received += [m for m in consumer.consume(10, timeout=1) if m.error() is None]
        if received:
            break
    consumer.close()
    [message] = received
    assert message.key() == b"quality_failed:ingest:bars"
    assert parse_event(message.value()) == sent
