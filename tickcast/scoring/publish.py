"""Every prediction on the Kafka ``predictions`` topic (key = symbol, value = contract JSON),
for consumers outside the platform (trading systems, the alert engine)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tickcast.core.settings import Settings

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Predictions that the broker did not acknowledge."""


class PredictionPublisher:
    def __init__(self, settings: Settings, flush_seconds: float = 30.0):
        self.topic = settings.topic_predictions
        self.flush_seconds = flush_seconds
        self._settings = settings
        self._producer: Any = None
        self._failures: list[str] = []

    def _config(self) -> dict[str, Any]:
        """Made when first needed: missing credentials fail a publish, not the scorer's start."""
        from tickcast.core.kafka_auth import KafkaCredentialsError

        try:
            login = self._settings.kafka_client_config("scorer")
        except KafkaCredentialsError as exc:
            raise PublishError(str(exc)) from None
        return {**login, "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}

    def _on_delivery(self, err, msg) -> None:
        from confluent_kafka import KafkaError

        # Purged messages are reported as a timeout already, not as failures of their own.
        if err is not None and err.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self._failures.append(f"{msg.key()!r}: {err}")

    def _first_failures(self) -> str:
        return f": {'; '.join(self._failures[:3])}" if self._failures else ""

    def publish_rows(self, rows: list[tuple[str, str, str, str]]) -> int:
        """Send (symbol, data_timestamp, predicted_at, JSON) rows and wait for the broker."""
        from confluent_kafka import Producer

        if not rows:
            return 0
        if self._producer is None:
            self._producer = Producer(self._config())
        self._failures = []
        for symbol, _data_ts, _predicted_at, payload in rows:
            while True:
                try:
                    self._producer.produce(self.topic, key=symbol, value=payload, on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain, then go on
                    self._producer.poll(0.1)
        remaining = self._producer.flush(self.flush_seconds)
        if remaining:
            # Dropped, not left queued: a retry of the batch sends them again, and they must not
            # count against (or be delivered with) the next batch.
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.poll(0)
            raise PublishError(
                f"{remaining} prediction(s) not acknowledged within {self.flush_seconds:g}s on topic "
                f"{self.topic} (dropped from the local queue){self._first_failures()}"
            )
        if self._failures:
            raise PublishError(f"{len(self._failures)} prediction(s) failed on topic {self.topic}{self._first_failures()}")
        return len(rows)

    def publish(self, frame: pd.DataFrame) -> int:
        from tickcast.core.predictions import frame_payloads

        return self.publish_rows(frame_payloads(frame))
