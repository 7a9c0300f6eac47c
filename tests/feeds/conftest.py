"""Fixtures for the feed tests: a fresh Kafka topic per test."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A new 4-partition topic (the broker does not auto-create topics)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"ticks-test-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)]).values():
        future.result(timeout=60)
    return name
