"""The Kafka ``predictions`` topic, followed by one background thread per process that holds
the latest predictions (``tickcast.scoring.live_predictions``: the API, the dashboard).

Every such process must see every prediction, so the consumer joins no group: it has a group id
of its own (librdkafka wants one) and ``assign``s every partition of the topic itself, never
committing an offset. It starts at the end of the topic as it was *before* the online store is
read once (``catch_up``): the scorer writes a prediction to the store before it publishes it, so
one published before that snapshot is in the store read, and one published after is consumed.
Some come both ways; the receiver keeps the newer of two predictions of a symbol, so that is
harmless.

The thread hands raw payloads (contract JSON as bytes) over in batches through a bounded
queue: when the receiver falls behind, the thread waits, and the broker keeps the rest.
``healthy`` says whether the topic is being followed; while it is not (connecting, the broker
unreachable, the topic missing) the receiver polls the online store instead. Nothing starts on
import: the thread and its consumer exist from ``start`` to ``stop``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tickcast.core import kafka_auth

if TYPE_CHECKING:
    from tickcast.core.kafka_auth import KafkaRole
    from tickcast.core.settings import Settings

log = logging.getLogger(__name__)
# librdkafka's own log lines, through Python logging instead of stderr, at DEBUG: while the
# broker is down it reports every reconnect; this module says once what matters.
kafka_log = logging.getLogger(f"{__name__}.librdkafka")


class _LibrdkafkaLog:
    def log(self, level: int, message: str, *args: object) -> None:
        kafka_log.debug(message, *args)

# Messages taken per consume call, and batches waiting for the event loop: the most the
# thread holds is BATCH_MESSAGES x QUEUE_BATCHES payloads (~400 bytes each).
BATCH_MESSAGES = 1000
QUEUE_BATCHES = 64
# How long a blocking call of the thread may wait before it looks at the stop flag again.
POLL_TIMEOUT_SECONDS = 0.25
# Metadata and watermark requests while connecting, and the first retry after a failed
# connection (doubling up to the maximum).
CONNECT_TIMEOUT_SECONDS = 3.0
RETRY_SECONDS = 2.0
RETRY_MAX_SECONDS = 30.0
# While the broker is unreachable, how often the thread asks it for metadata to notice it is back.
PROBE_SECONDS = 2.0
# librdkafka's prefetch buffer per partition (KiB): bounded, a few seconds of predictions.
PREFETCH_KBYTES = 8192


class Unavailable(RuntimeError):
    """The broker or the topic cannot be reached now."""


class KafkaPredictionFeed:
    """Follows ``settings.topic_predictions`` from its end on a daemon thread.

    ``catch_up()`` is called on the thread after the end offsets are taken and before the
    partitions are assigned; it returns the payloads to deliver first (the online store's rows).
    ``notify()`` is called (on the thread) after each batch is queued: it must be thread-safe
    (``loop.call_soon_threadsafe``). ``on_health(bool)`` is called on the thread when following
    the topic starts or stops. ``client`` is the Kafka principal the process reads as (``api`` or
    ``dashboard``) and names it in the consumer's group id (``tickcast-<client>-<host>-<pid>-<random>``),
    for whoever lists the broker's consumers.
    """

    def __init__(self, settings: Settings, catch_up: Callable[[], list[bytes]], notify: Callable[[], None],
                 on_health: Callable[[bool], None] | None = None, client: KafkaRole = "api"):
        self.topic = settings.topic_predictions
        self.client = client
        self.bootstrap = settings.kafka_bootstrap_servers
        self.batches: queue.Queue[list[bytes]] = queue.Queue(QUEUE_BATCHES)
        self._settings = settings
        self._catch_up = catch_up
        self._notify = notify
        self._on_health = on_health
        self._stop = threading.Event()
        self._brokers_down = threading.Event()
        self._thread: threading.Thread | None = None
        self.healthy = False
        self.positions: dict[int, int] = {}  # where consumption started, per partition

    # -- lifecycle (called from the event loop) ---------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="predictions-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close the consumer (blocking: call it from a worker thread)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the predictions feed thread did not stop within %.0fs", timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread -------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            **self._login(),
            # Unique per process, never committed: no group membership, no shared offsets.
            "group.id": f"{kafka_auth.prediction_feed_group_prefix(self.client)}{socket.gethostname()}-{os.getpid()}-"
                        f"{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 100,
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
            "error_cb": self._on_error,
            "logger": _LibrdkafkaLog(),
        }

    def _login(self) -> dict[str, Any]:
        # On the thread: missing credentials are an unavailable topic (the store is polled), not a crash.
        try:
            return self._settings.kafka_client_config(self.client)
        except kafka_auth.KafkaCredentialsError as exc:
            raise Unavailable(str(exc)) from None

    def _on_error(self, error) -> None:
        from confluent_kafka import KafkaError

        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down.set()
        elif error.fatal() or error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                                               KafkaError.TOPIC_AUTHORIZATION_FAILED):
            log.warning("kafka: %s", error)
        else:
            log.debug("kafka: %s", error)

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if self._on_health is not None:
                self._on_health(healthy)

    def _run(self) -> None:
        retry, failures = RETRY_SECONDS, 0
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._connect()
                retry, failures = RETRY_SECONDS, 0
                self._follow(consumer)
            except Unavailable as exc:
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "predictions topic %r on %s not available (%s); the online store is polled meanwhile, "
                    "Kafka retried in %.0fs", self.topic, self.bootstrap, exc, retry)
            except Exception:  # noqa: BLE001 - the thread must outlive any surprise; the poll covers meanwhile
                failures += 1
                log.exception("the predictions feed failed; the online store is polled meanwhile, "
                              "Kafka retried in %.0fs", retry)
            finally:
                self._set_health(False)
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # noqa: BLE001 - closing a consumer of a dead broker may fail
                        log.debug("closing the predictions consumer failed", exc_info=True)
            if self._stop.wait(retry):
                break
            retry = min(retry * 2, RETRY_MAX_SECONDS)

    def _connect(self):
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        self._brokers_down.clear()
        consumer = Consumer(self._config())
        try:
            metadata = self._metadata(consumer)
            found = metadata.topics.get(self.topic)
            if found is None or found.error is not None or not found.partitions:
                raise Unavailable(f"topic not found: {None if found is None else found.error}")
            # The end of each partition before the store is read: nothing falls between the two.
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                      timeout=CONNECT_TIMEOUT_SECONDS, cached=False)[1]
                    for p in sorted(found.partitions)}
        except KafkaException as exc:
            consumer.close()
            raise Unavailable(str(exc.args[0] if exc.args else exc)) from None
        except Unavailable:
            consumer.close()
            raise
        try:
            self._hand_over(self._catch_up())
            consumer.assign([TopicPartition(self.topic, p, offset) for p, offset in ends.items()])
        except BaseException:
            consumer.close()
            raise
        self.positions = ends
        log.info("predictions: following Kafka topic %r on %s from offsets %s (partition: offset)",
                 self.topic, self.bootstrap, ends)
        self._set_health(True)
        return consumer

    def _metadata(self, consumer):
        """The topic's metadata, asked in short steps so that a stop is not kept waiting."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:
            try:
                return consumer.list_topics(self.topic, timeout=POLL_TIMEOUT_SECONDS)
            except KafkaException:
                if self._stop.is_set() or time.monotonic() >= deadline:
                    raise

    def _follow(self, consumer) -> None:
        from confluent_kafka import KafkaError, KafkaException

        next_probe = 0.0
        while not self._stop.is_set():
            # What is already there, at once; otherwise wait for the next message (GIL released).
            messages = consumer.consume(BATCH_MESSAGES, timeout=0)
            if not messages:
                first = consumer.poll(POLL_TIMEOUT_SECONDS)
                if first is not None:
                    messages = [first, *consumer.consume(BATCH_MESSAGES - 1, timeout=0)]
            payloads = []
            for message in messages:
                error = message.error()
                if error is None:
                    value = message.value()
                    if value:
                        payloads.append(value)
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("predictions topic: %s", error)
            if payloads:
                self._brokers_down.clear()
                self._set_health(True)
                self._hand_over(payloads)
            elif self._brokers_down.is_set():
                if self.healthy:
                    log.warning("Kafka at %s unreachable: polling the online store until it is back", self.bootstrap)
                    self._set_health(False)
                now = time.monotonic()
                if now >= next_probe:
                    next_probe = now + PROBE_SECONDS
                    try:
                        consumer.list_topics(self.topic, timeout=1.0)
                    except KafkaException:
                        continue
                    self._brokers_down.clear()
                    log.info("Kafka at %s reachable again: following topic %r", self.bootstrap, self.topic)
                    self._set_health(True)

    def _hand_over(self, payloads: list[bytes]) -> None:
        """Queue a batch for the event loop, waiting while the queue is full (back-pressure)."""
        for start in range(0, len(payloads), BATCH_MESSAGES):
            batch = payloads[start:start + BATCH_MESSAGES]
            while not self._stop.is_set():
                try:
                    self.batches.put(batch, timeout=POLL_TIMEOUT_SECONDS)
                    break
                except queue.Full:
                    continue
            else:
                return
            try:
                self._notify()
            except RuntimeError:  # the event loop is closed: the app is shutting down
                self._stop.set()
                return
