"""An idempotent confluent-kafka producer for ticks, with delivery accounting.

Every message is keyed by symbol (so one symbol's ticks stay in order on one
partition). Delivery reports count delivered and failed messages; ``close`` flushes
with a bounded wait and purges whatever could not be delivered, so a dead broker
ends in a count of failures, never in a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tickcast.core.settings import Settings
from tickcast.feeds import FeedError

log = logging.getLogger(__name__)

# Enough in flight to keep ~50k ticks/s flowing while the broker acks a batch.
DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 262_144,
    "socket.connection.setup.timeout.ms": 10_000,
}


@dataclass
class ProduceStats:
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.produced / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"produced {self.produced:,}, delivered {self.delivered:,}, failed {self.failed:,} "
            f"in {self.elapsed:.1f}s ({self.rate:,.0f} ticks/s)"
        )
        if self.errors:
            text += f"; first error: {self.errors[0]}"
        return text


class _ClientLog:
    """librdkafka's own log lines, demoted to debug: they repeat on every reconnect attempt,
    and what matters reaches the user through ``connect``, ``error_cb`` and delivery reports."""

    _logger = logging.getLogger("tickcast.kafka.client")

    def log(self, level: int, msg: str, *args: object) -> None:
        self._logger.log(level if level >= logging.CRITICAL else logging.DEBUG, msg, *args)


class TickProducer:
    """Wraps ``confluent_kafka.Producer`` for one topic.

    Use as a context manager, or call ``connect()`` first and ``close()`` at the end.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        connect_timeout: float = 10.0,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic or settings.topic_ticks
        self.connect_timeout = connect_timeout
        if bootstrap_servers:
            # Before the login is chosen: another bootstrap may not be the embedded broker.
            settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap_servers})
        self._settings = settings
        # The login (security protocol, SASL) is added by connect().
        config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap_servers}
        config.update(DEFAULT_PRODUCER_CONFIG)
        # How long a tick waits for the broker (an outage, a leader election), buffered and
        # retried by librdkafka, before it is reported failed: loudly, and counted.
        config["message.timeout.ms"] = int(settings.producer_delivery_timeout_seconds * 1000)
        config.update(extra_config or {})
        config["error_cb"] = self._on_error
        config["logger"] = _ClientLog()
        self.bootstrap_servers = str(config["bootstrap.servers"])
        self._config = config
        self._producer: Any = None
        self._fatal: str | None = None
        self._last_error: str | None = None
        self._last_error_at = 0.0
        self._failures_reported_at = float("-inf")
        self.stats = ProduceStats()
        self._message_timeout_s = float(config["message.timeout.ms"]) / 1000.0

    # -- lifecycle ---------------------------------------------------------

    def connect(self) -> TickProducer:
        """Create the producer and check, within a bounded wait, that the topic exists."""
        from confluent_kafka import KafkaError, KafkaException, Producer

        from tickcast.core.kafka_auth import KafkaCredentialsError

        try:
            # As the feed's principal: on the embedded broker it may write `ticks` and nothing else.
            login = self._settings.kafka_client_config("feed")
        except KafkaCredentialsError as exc:
            raise FeedError(str(exc)) from None
        try:
            self._producer = Producer({**login, **self._config})
        except KafkaException as exc:
            raise FeedError(f"invalid Kafka producer configuration: {exc}") from exc
        try:
            metadata = self._producer.list_topics(self.topic, timeout=self.connect_timeout)
        except KafkaException as exc:
            self._producer = None
            raise FeedError(
                f"cannot reach the Kafka broker at {self.bootstrap_servers} within "
                f"{self.connect_timeout:g}s ("
                + (f"last error: {self._last_error}" if self._last_error else "is it running? `make up` starts it")
                + ")"
            ) from exc
        topic_md = metadata.topics.get(self.topic)
        if topic_md is None or topic_md.error is not None:
            code = topic_md.error.code() if topic_md is not None and topic_md.error else None
            self._producer = None
            if code in (None, KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise FeedError(
                    f"topic {self.topic!r} does not exist on {self.bootstrap_servers} "
                    "(`make up` creates the platform topics)"
                )
            raise FeedError(f"topic {self.topic!r} is not usable: {topic_md.error}")
        self.stats = ProduceStats()
        return self

    def close(self, timeout: float | None = None) -> ProduceStats:
        """Flush with a bounded wait; whatever is still queued afterwards is purged and failed."""
        if self._producer is None:
            self.stats.finished = self.stats.finished or time.monotonic()
            return self.stats
        wait = self._message_timeout_s + 5.0 if timeout is None else timeout
        remaining = self._producer.flush(wait)
        if remaining:
            log.warning("%d message(s) still undelivered after %.0fs; purging", remaining, wait)
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            # Purged messages come back through the delivery callback as failures.
            self._producer.flush(5.0)
            unreported = self.stats.produced - self.stats.delivered - self.stats.failed
            if unreported > 0:
                self.stats.failed += unreported
                self._record_error(f"{unreported} message(s) purged without a delivery report")
        self._producer = None
        self.stats.finished = time.monotonic()
        return self.stats

    def __enter__(self) -> TickProducer:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- producing ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.stats.produced - self.stats.delivered - self.stats.failed

    def send(self, key: str, value: bytes) -> None:
        self._check_usable()
        produce = self._producer.produce
        while True:
            try:
                produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: let librdkafka drain (bounded by message.timeout.ms).
                self._producer.poll(0.05)
                self._check_usable()
        self.stats.produced += 1

    def send_many(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """Queue many messages; serves delivery reports as it goes."""
        self._check_usable()
        producer = self._producer
        produce = producer.produce
        topic, callback = self.topic, self._on_delivery
        for i in range(len(values)):
            try:
                produce(topic, values[i], keys[i], on_delivery=callback)
            except BufferError:
                while True:
                    producer.poll(0.05)
                    self._check_usable()
                    try:
                        produce(topic, values[i], keys[i], on_delivery=callback)
                        break
                    except BufferError:
                        continue
            self.stats.produced += 1
        producer.poll(0)

    def poll(self, timeout: float = 0.0) -> None:
        if self._producer is not None:
            self._producer.poll(timeout)

    # -- callbacks ---------------------------------------------------------

    def _check_usable(self) -> None:
        if self._producer is None:
            raise FeedError("producer is not connected; call connect() first")
        if self._fatal:
            raise FeedError(f"Kafka producer hit a fatal error: {self._fatal}")

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            self._record_error(str(err))

    def _on_error(self, err: Any) -> None:
        if getattr(err, "fatal", lambda: False)():
            self._fatal = str(err)
            log.error("Kafka producer fatal error: %s", err)
            return
        # A down broker repeats the same error many times a second: say it once per 10 s.
        text, now = str(err), time.monotonic()
        if text != self._last_error or now - self._last_error_at > 10.0:
            log.warning("Kafka client: %s", text)
            self._last_error, self._last_error_at = text, now

    def _record_error(self, text: str) -> None:
        if len(self.stats.errors) < 5:
            self.stats.errors.append(text)
        # Every failure is counted; the count is said at once and then at most every 10 s, so
        # a long outage is never silent and never floods the log.
        now = time.monotonic()
        if now - self._failures_reported_at >= 10.0:
            self._failures_reported_at = now
            log.error("%d tick(s) not delivered to %r so far (of %d produced); latest: %s",
                      self.stats.failed, self.topic, self.stats.produced, text)
