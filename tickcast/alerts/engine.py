"""The alert engine (`tickcast alerts run`, program ``alerts`` under `tickcast up`): the IO shell
around the evaluator, the dispatcher and the pipeline monitor.

One loop: consume a batch from Kafka ``predictions`` and the pipeline events topic, evaluate it
in one transaction (``Evaluator.process``), and only then commit the consumer's offsets - a crash
in between makes the batch be consumed again, which inserts nothing twice; start the deliveries
that are due; run the pipeline monitor when it is due; write the progress `tickcast status`
shows. On start, before anything else, the deliveries a previous run left ``sending`` are
reconciled with their providers.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tickcast.alerts.channels import Channel, channels_from_settings
from tickcast.alerts.delivery import Dispatcher
from tickcast.alerts.evaluate import Evaluator
from tickcast.alerts.monitor import PipelineMonitor
from tickcast.alerts.policy import Clock, utc_now
from tickcast.alerts.store import AlertStore
from tickcast.core.events import PipelineEvent
from tickcast.core.faults import FaultPoint, fault_point

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.alerts")

MAX_MESSAGES = 2000
POLL_SECONDS = 0.1


T = TypeVar("T")


class AlertEngine:
    def __init__(self, settings: Settings, *, channels: dict[str, Channel] | None = None, clock: Clock = utc_now):
        self.settings = settings
        self.store = AlertStore(settings.alerts_db_url, clock=clock)
        self.channels = channels or channels_from_settings(settings)
        dry = frozenset(name for name, channel in self.channels.items() if channel.dry_run)
        self.evaluator = Evaluator(self.store, dashboard_url=settings.alerts_link_base, dry_run_channels=dry)
        self._events_lock = threading.Lock()
        self.dispatcher = Dispatcher.from_settings(self.store, self.channels, settings, clock=clock,
                                                   report=self._own_event)
        self.monitor = PipelineMonitor(settings, self._own_event, clock=clock)
        self._own: list[PipelineEvent] = []
        self.counts = {"predictions": 0, "events": 0, "invalid": 0, "alerts": 0}

    def _own_event(self, event: PipelineEvent) -> None:
        """The engine's own reports (the monitor's checks, dead deliveries), evaluated with the
        next batch."""
        with self._events_lock:
            self._own.append(event)

    def run(self, stop: threading.Event, *, stop_after_seconds: float | None = None) -> None:
        from confluent_kafka import Consumer

        from tickcast.catalog.progress import ProgressFile, progress_path

        settings = self.settings
        real = sorted(n for n, c in self.channels.items() if not c.dry_run)
        dry = sorted(n for n, c in self.channels.items() if c.dry_run)
        log.info("alert engine: %d rule(s); channels %s%s; database %s", len(self.store.rules()),
                 ", ".join(real) or "none real", f" (dry run: {', '.join(dry)})" if dry else "",
                 _safe_url(settings.alerts_db_url))
        reconciled = self.dispatcher.reconcile()
        if any(reconciled.values()):
            log.info("reconciled the deliveries a previous run left open: %s", reconciled)
        consumer = Consumer({
            **settings.kafka_client_config("alerts"), "group.id": settings.alerts_consumer_group,
            "enable.auto.commit": False, "auto.offset.reset": "latest", "enable.partition.eof": False,
            # A killed engine's partitions go to its restart after 10 s, not the default 45.
            "session.timeout.ms": 10_000,
        })
        topics = [settings.topic_predictions, settings.topic_alerts]

        def assigned(_consumer: Any, partitions: list[Any]) -> None:
            log.info("following %s (%d partition(s) assigned)", " and ".join(topics), len(partitions))

        consumer.subscribe(topics, on_assign=assigned)
        progress = ProgressFile(progress_path(settings, "alerts"))
        window = {"messages": 0, "since": time.monotonic(), "batches": 0, "busy": 0.0, "cycles": 0}
        self._record(progress, window)  # at once: `tickcast up` waits for it
        next_report = time.monotonic() + 5
        deadline = time.monotonic() + stop_after_seconds if stop_after_seconds else None
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                messages = consumer.consume(MAX_MESSAGES, timeout=POLL_SECONDS)
                started = time.monotonic()
                self.monitor.check_if_due()
                predictions, events = self._decode(messages)
                with self._events_lock:
                    events, self._own = events + self._own, []
                if predictions or events:
                    made = self._while_store_away(stop, functools.partial(self.evaluator.process, predictions, events))
                    self.counts["alerts"] += len(made)
                    if made:
                        log.info("%d alert(s) queued", len(made))
                if messages:
                    fault_point(FaultPoint.ALERTS_AFTER_OUTBOX_WRITE)
                    # Only after the outbox is durable: a crash before this consumes the batch again.
                    consumer.commit(asynchronous=False)
                self._while_store_away(stop, self.dispatcher.dispatch_due)
                window["messages"] += len(messages)
                window["cycles"] += 1
                window["busy"] += time.monotonic() - started
                if time.monotonic() >= next_report:
                    self._record(progress, window)
                    next_report = time.monotonic() + 5
        finally:
            consumer.close()
            self.dispatcher.close(wait=True)
            self._record(progress, window)
            self.store.close()
            log.info("alert engine stopped: %s", ", ".join(f"{k} {v}" for k, v in self.counts.items()))

    @staticmethod
    def _while_store_away(stop: threading.Event, call: Callable[[], T]) -> T:
        """``call()``, tried again while the alert store cannot be reached (its database restarting):
        the engine waits for it rather than exiting, and commits nothing to Kafka meanwhile, so the
        batch in hand is evaluated once the store is back. Gives up only when asked to stop."""
        from sqlalchemy.exc import OperationalError
        from tenacity import Retrying, retry_if_exception_type, wait_exponential

        def waiting(state: Any) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("alert store unreachable (%s); trying again in %.1f s",
                        str(getattr(error, "orig", error)).splitlines()[0][:200],
                        state.next_action.sleep if state.next_action else 0.0)

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a stop request ends the wait, and the stop condition the retries

        for attempt in Retrying(retry=retry_if_exception_type(OperationalError),
                                wait=wait_exponential(multiplier=0.5, max=10), stop=lambda _state: stop.is_set(),
                                sleep=pause, before_sleep=waiting, reraise=True):
            with attempt:
                return call()
        raise AssertionError("unreachable: Retrying either returns or raises")

    def _decode(self, messages: list[Any]) -> tuple[list[dict[str, Any]], list[PipelineEvent]]:
        import orjson
        from pydantic import ValidationError

        from tickcast.catalog.events import parse_event

        predictions: list[dict[str, Any]] = []
        events: list[PipelineEvent] = []
        for message in messages:
            if message.error() is not None:
                log.warning("kafka: %s", message.error())
                continue
            try:
                if message.topic() == self.settings.topic_alerts:
                    events.append(parse_event(message.value()))
                else:
                    value = orjson.loads(message.value())
                    if not isinstance(value, dict) or not {"symbol", "signal", "data_timestamp"} <= value.keys():
                        raise ValueError("not a prediction: symbol, signal and data_timestamp are required")
                    predictions.append(value)
            except (ValueError, ValidationError, orjson.JSONDecodeError) as exc:
                self.counts["invalid"] += 1
                log.warning("skipped a message on %s (partition %s, offset %s): %s", message.topic(),
                            message.partition(), message.offset(), str(exc).splitlines()[0][:300])
        self.counts["predictions"] += len(predictions)
        self.counts["events"] += len(events)
        return predictions, events

    def _record(self, progress: Any, window: dict[str, Any]) -> None:
        elapsed = max(time.monotonic() - window["since"], 1e-9)
        window["batches"] += window["cycles"]
        progress.record("alerts", {
            "name": "alerts", "batchId": window["batches"], "timestamp": datetime.now(UTC).isoformat(),
            "numInputRows": window["messages"], "inputRowsPerSecond": window["messages"] / elapsed,
            "processedRowsPerSecond": window["messages"] / elapsed,
            "durationMs": {"triggerExecution": 1000 * window["busy"] / max(window["cycles"], 1)},
            "alerts": dict(self.counts), "deliveries_in_flight": self.dispatcher.in_flight(),
        })
        window.update(messages=0, since=time.monotonic(), busy=0.0, cycles=0)


def _safe_url(url: str) -> str:
    """A database URL without its password (it goes to the log)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
