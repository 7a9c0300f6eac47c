"""Pipeline events (``tickcast.core.events``) on the Kafka topic ``TICKCAST_TOPIC_ALERTS``:
how the platform's parts tell the alert engine what happened to them. Key = the incident
(kind:subject), so one incident's reports stay in order."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from tickcast.core.events import PipelineEvent

if TYPE_CHECKING:
    from tickcast.core.kafka_auth import KafkaRole
    from tickcast.core.settings import Settings

log = logging.getLogger(__name__)


class EventPublisher:
    """Reports never raise into the part that reports: a part must keep working while the broker
    is away (the failure is logged; the part reports again at its next check)."""

    def __init__(self, settings: Settings, role: KafkaRole):
        """``role``: the reporting part's Kafka principal (it must be allowed to write the topic)."""
        self.topic = settings.topic_alerts
        self._settings, self._role = settings, role
        self._producer: Any = None
        # Parts report from more than one thread (the scorer's loop and its champion check):
        # one producer between them.
        self._creating = threading.Lock()
        # Events the broker did not take (after the producer's own retries), for a caller that
        # must know (`tickcast alerts report`).
        self.failed = 0

    def report(self, event: PipelineEvent) -> None:
        from confluent_kafka import KafkaException, Producer

        from tickcast.core.kafka_auth import KafkaCredentialsError

        try:
            with self._creating:
                if self._producer is None:
                    self._producer = Producer({**self._settings.kafka_client_config(self._role),
                                               "enable.idempotence": True, "linger.ms": 5,
                                               "message.timeout.ms": 30_000})
            self._producer.produce(self.topic, key=event.incident_subject, value=event.model_dump_json(),
                                   on_delivery=self._on_delivery)
            self._producer.poll(0)
        except (BufferError, KafkaException, KafkaCredentialsError) as exc:
            self.failed += 1
            log.error("could not report %s on %s to topic %s: %s", event.kind, event.subject, self.topic, exc)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            log.error("a pipeline event was not delivered to topic %s: %s", self.topic, err)

    def flush(self, timeout: float = 10.0) -> int:
        return self._producer.flush(timeout) if self._producer is not None else 0


def parse_event(value: bytes | str) -> PipelineEvent:
    """An event from its topic message; ``pydantic.ValidationError`` (a ValueError) says why not."""
    return PipelineEvent.model_validate_json(value)


class StateReporter:
    """A condition a part checks often (every micro-batch, say) as pipeline events: published
    when it changes and again every ``repeat_seconds`` while it stays, so the engine hears of it
    after a restart of either side without an event per check."""

    def __init__(self, publisher: EventPublisher, subject: str, repeat_seconds: float = 60.0):
        self.publisher = publisher
        self.subject = subject
        self.repeat_seconds = repeat_seconds
        self._last: dict[str, tuple[bool, float]] = {}

    def firing(self, kind: str) -> bool:
        """Whether ``kind`` was last reported firing."""
        last = self._last.get(kind)
        return last is not None and last[0]

    def state(self, kind: str, firing: bool, message: str, *, severity: str = "warning",
              details: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and last[0] == firing and now - last[1] < self.repeat_seconds:
            return
        self._last[kind] = (firing, now)
        self.publisher.report(PipelineEvent.reported(kind, self.subject, "firing" if firing else "resolved",
                                                     message, severity=severity, details=details))
