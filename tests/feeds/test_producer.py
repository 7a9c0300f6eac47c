"""The tick producer: configuration, delivery accounting, and clear errors."""

from __future__ import annotations

from datetime import UTC

import pytest
from feed_helpers import assert_valid_tick, consume_all, decode
from typer.testing import CliRunner

from tickcast.cli import app
from tickcast.core.ticks import encode_tick, format_ts, make_tick, now_iso, validate_symbol
from tickcast.feeds import FeedError
from tickcast.feeds.producer import TickProducer
from tickcast.platform.processes import free_port


def test_idempotent_batched_lz4_config_with_bootstrap_override(settings) -> None:
    producer = TickProducer(settings, bootstrap_servers="broker-a:9092,broker-b:9092")
    config = producer._config
    assert config["bootstrap.servers"] == "broker-a:9092,broker-b:9092"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["compression.type"] == "lz4"
    assert config["linger.ms"] > 0
    assert producer.topic == settings.topic_ticks
    assert TickProducer(settings).bootstrap_servers == settings.kafka_bootstrap_servers


def test_tick_encoding_matches_the_contract() -> None:
    from datetime import datetime

    ts = format_ts(datetime(2024, 1, 2, 14, 30, tzinfo=UTC))
    assert ts == "2024-01-02T14:30:00.000000Z"
    tick = make_tick(msg_id="m1", symbol="AAPL", ts=ts, price=187.15, volume=1200.0,
                     source="test", produced_at=now_iso())
    assert_valid_tick(tick)
    assert encode_tick(tick).startswith(b'{"schema_version":1,"msg_id":"m1","symbol":"AAPL"')
    assert validate_symbol(" brk-b ") == "BRK-B"
    with pytest.raises(ValueError):
        validate_symbol("A B")


def test_unreachable_broker_fails_fast_with_a_clear_error(settings) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(FeedError, match=f"cannot reach the Kafka broker at {dead} within 1s"):
        TickProducer(settings, bootstrap_servers=dead, connect_timeout=1).connect()


def test_unreachable_broker_command_exits_nonzero_with_one_line() -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app, ["produce", "synthetic", "--seconds", "1", "-b", dead, "--connect-timeout", "1"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the Kafka broker at {dead} within 1s (is it running? `make up` starts it)"
    ]


def test_missing_topic_is_a_clear_error(settings, kafka_bootstrap: str) -> None:
    with pytest.raises(FeedError, match="topic 'no-such-topic' does not exist"):
        TickProducer(settings, bootstrap_servers=kafka_bootstrap, topic="no-such-topic").connect()


def test_delivery_counts(settings, kafka_bootstrap: str, topic: str) -> None:
    producer = TickProducer(settings, bootstrap_servers=kafka_bootstrap, topic=topic).connect()
    values = [
        encode_tick(make_tick(msg_id=f"m{i}", symbol=sym, ts=now_iso(), price=10.0 + i,
                              volume=1.0, source="test", produced_at=now_iso()))
        for i, sym in enumerate(["A", "B", "A", "C"])
    ]
    producer.send_many(["A", "B", "A", "C"], values)
    producer.send("D", values[0])
    stats = producer.close()
    assert (stats.produced, stats.delivered, stats.failed) == (5, 5, 0)
    assert "produced 5, delivered 5, failed 0" in stats.summary()
    messages = consume_all(kafka_bootstrap, topic, 5)
    assert sorted(m.key() for m in messages) == [b"A", b"A", b"B", b"C", b"D"]
    assert [p["msg_id"] for m, p in zip(messages, decode(messages), strict=True) if m.key() == b"A"] == ["m0", "m2"]
    with pytest.raises(FeedError, match="not connected"):
        producer.send("A", values[0])


def test_undelivered_ticks_are_counted_out_loud_through_an_outage(settings, caplog) -> None:
    from confluent_kafka import KafkaError

    producer = TickProducer(settings.model_copy(update={"producer_delivery_timeout_seconds": 45}))
    assert producer._config["message.timeout.ms"] == 45_000
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    with caplog.at_level("ERROR", logger="tickcast.feeds.producer"):
        # What librdkafka reports for each tick the broker never acknowledged in time.
        for _ in range(1_000):
            producer.stats.produced += 1
            producer._on_delivery(timed_out, None)
    assert producer.stats.failed == 1_000
    said = [r.getMessage() for r in caplog.records]
    # Said at once, with the count, and not once per tick.
    assert len(said) == 1 and said[0].startswith("1 tick(s) not delivered to 'ticks' so far (of 1 produced)")
    producer._failures_reported_at -= 10.0
    producer._on_delivery(timed_out, None)
    assert "1001 tick(s) not delivered" in caplog.records[-1].getMessage()
    assert "failed 1,001" in producer.stats.summary()
