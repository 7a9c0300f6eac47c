"""Pipeline events on the session broker, for tests that run a part and check what it told the
alert engine: a fresh `alerts` topic, and every event on it."""

from __future__ import annotations

import uuid


def alerts_topic(bootstrap: str) -> str:
    """A new one-partition topic for one test's pipeline events."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures resolve
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    return topic


def read_events(bootstrap: str, topic: str) -> list:
    """Every event on ``topic``, from the start (ten one-second polls)."""
    from confluent_kafka import Consumer

    from tickcast.catalog.events import parse_event

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    events = []
    for _ in range(10):
        events += [parse_event(m.value()) for m in consumer.consume(100, timeout=1) if m.error() is None]
    consumer.close()
    return events
