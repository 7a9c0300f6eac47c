"""Helpers for the feed tests: read a topic back and check ticks against the contract."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import orjson

from tickcast.core.ticks import tick_schema

DATA = Path(__file__).resolve().parent.parent / "data"
ISO_UTC_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def consume_all(bootstrap: str, topic: str, expected: int, *, timeout: float = 60.0) -> list:
    """Read a topic from the start until ``expected`` messages (or the timeout) arrive.

    The timeout only stops a broken test from hanging; the count is asserted by the caller.
    """
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"consumer error: {msg.error()}")
                messages.append(msg)
        # Anything beyond the expected count would be a duplicate: drain briefly.
        for msg in consumer.consume(num_messages=10_000, timeout=1.0):
            if not msg.error():
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def assert_valid_tick(payload: dict) -> None:
    """The tick JSON schema, plus the exact timestamp spelling the contract promises."""
    import jsonschema

    jsonschema.Draft202012Validator(tick_schema()).validate(payload)
    assert ISO_UTC_MICROS.match(payload["ts"]), payload["ts"]
    assert ISO_UTC_MICROS.match(payload["produced_at"]), payload["produced_at"]


def decode(messages: list) -> list[dict]:
    return [orjson.loads(m.value()) for m in messages]
