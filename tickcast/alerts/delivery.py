"""Delivery from the outbox: at most one message per alert and recipient, none lost.

Each attempt is recorded first (the delivery is ``sending``, its attempt counted, committed),
then the provider is called, then the outcome is recorded (``sent`` with the provider's id).
A crash between the call and the record leaves a ``sending`` row; ``Dispatcher.reconcile`` runs
before anything else after a restart and asks the provider whether it has the message (every
message carries its alert's reference): found, the row is ``sent``; not found, it is sent again;
a channel that cannot be asked (a webhook) is sent again with the alert id in a header for the
receiver to drop the copy. A dry-run channel kept nothing outside: it counts as sent.

Retries (tenacity): 429, 5xx, timeouts and refused connections are retried with exponential
backoff and full jitter, never sooner than the provider's Retry-After, up to
``alerts_max_attempts`` attempts in all (counted across restarts). Other 4xx, or the last attempt
failing, dead-letter the delivery and report a ``delivery_dead`` pipeline event, which rules can
alert on like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tickcast.alerts.channels import Channel, PermanentError, TransientError, render
from tickcast.alerts.policy import Clock, utc_now
from tickcast.alerts.store import AlertStore, DeliveryUpdate
from tickcast.core.events import PipelineEvent
from tickcast.core.faults import FaultPoint, fault_point
from tickcast.core.retry import RetryAfterOr

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.alerts")

# How far before a "sending" mark to look for the message at the provider (clock skew).
RECONCILE_SLACK = timedelta(minutes=5)


class Dispatcher:
    def __init__(self, store: AlertStore, channels: dict[str, Channel], *, max_attempts: int, base_seconds: float,
                 cap_seconds: float, workers: int = 8, clock: Clock = utc_now,
                 report: Callable[[PipelineEvent], None] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.channels = channels
        self.max_attempts = max_attempts
        self.base_seconds = base_seconds
        self.cap_seconds = cap_seconds
        self.clock = clock
        self.report = report or (lambda event: None)
        self.sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alert-delivery")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._dead_channels: set[str] = set()
        # Outcomes are written in groups: whichever delivery finishes writes every outcome that
        # arrived meanwhile, in one transaction (a commit per message made SQLite the bottleneck).
        self._outcomes: list[DeliveryUpdate] = []
        self._outcomes_lock = threading.Lock()
        self._writer = threading.Lock()

    @classmethod
    def from_settings(cls, store: AlertStore, channels: dict[str, Channel], settings: Settings, *,
                      cap_seconds: float | None = None, **kwargs: Any) -> Dispatcher:
        """Attempts and backoff from ``TICKCAST_ALERTS_*`` (``cap_seconds`` caps the wait lower)."""
        cap = settings.alerts_retry_max_seconds if cap_seconds is None else min(cap_seconds, settings.alerts_retry_max_seconds)
        return cls(store, channels, max_attempts=settings.alerts_max_attempts,
                   base_seconds=settings.alerts_retry_base_seconds, cap_seconds=cap, **kwargs)

    # -- after a restart ----------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Settle every delivery a previous run left ``sending``: sent if the provider has it,
        pending (sent again) if not. Runs before the first dispatch."""
        counts = {"sent": 0, "resend": 0}
        for row in self.store.deliveries_in("sending"):
            channel = self.channels[row["channel"]]
            message = render(row["alert"])
            since = (row["sending_since"] or self.clock()) - RECONCILE_SLACK
            try:
                found = channel.find(message, row["address"], since)
            except (TransientError, PermanentError) as exc:
                # The provider cannot be asked now: leave the row for the next reconcile.
                log.warning("could not ask %s about alert %s: %s", row["channel"], message.reference, exc)
                continue
            if isinstance(found, str):
                self.store.mark_delivery(row["id"], "sent", provider_id=found)
                counts["sent"] += 1
                log.info("reconciled: %s had alert %s already (%s)", row["channel"], message.reference, found)
            else:
                # Not there (None), or a channel that cannot be asked (False, a webhook whose
                # receiver drops copies by alert id): send it again.
                self.store.mark_delivery(row["id"], "pending", next_attempt_at=self.clock())
                counts["resend"] += 1
                log.info("reconciled: alert %s is not at %s; sending it again", message.reference, row["channel"])
        return counts

    # -- the loop -----------------------------------------------------------------------------

    def dispatch_due(self, *, limit: int = 200, alert: str | None = None) -> list[Future]:
        """Start delivering what is due (``alert``'s deliveries only, when given); the futures
        of the deliveries started."""
        with self._lock:
            busy = set(self._in_flight)
        rows = self.store.due_deliveries(self.clock(), limit=limit, exclude=busy, alert=alert)
        with self._lock:
            rows = [row for row in rows if row["id"] not in self._in_flight]
            self._in_flight.update(row["id"] for row in rows)
        # Each first attempt is marked "sending" before its call, all of them in one transaction.
        fresh = [row for row in rows if row["attempts"] < self.max_attempts]
        try:
            self.store.mark_deliveries([DeliveryUpdate(row["id"], "sending", attempt=True) for row in fresh])
        except BaseException:
            with self._lock:
                self._in_flight.difference_update(row["id"] for row in rows)
            raise
        marked = {row["id"] for row in fresh}
        return [self._pool.submit(self._deliver_and_release, row, row["id"] in marked) for row in rows]

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def close(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _deliver_and_release(self, row: dict[str, Any], marked: bool) -> str:
        try:
            return self.deliver(row, marked=marked)
        except Exception:  # noqa: BLE001 - a bug in one delivery must not stop the others
            log.exception("delivery %s failed unexpectedly; it stays open for the next run", row["id"])
            return "error"
        finally:
            with self._lock:
                self._in_flight.discard(row["id"])

    def deliver(self, row: dict[str, Any], *, marked: bool = False) -> str:
        """Deliver one row, retrying what is worth retrying; its final status. ``marked``: its
        first attempt is marked ``sending`` already (``dispatch_due`` marks them together)."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
        from tenacity.wait import wait_random_exponential

        channel = self.channels[row["channel"]]
        message = render(row["alert"])
        remaining = self.max_attempts - row["attempts"]
        if remaining <= 0:
            return self._dead(row, channel, "no attempt left")
        retrying = Retrying(
            stop=stop_after_attempt(remaining),
            wait=RetryAfterOr(wait_random_exponential(multiplier=self.base_seconds, max=self.cap_seconds)),
            retry=retry_if_exception_type(TransientError),
            before=lambda state: None if marked and state.attempt_number == 1 else self.store.mark_delivery(
                row["id"], "sending", attempt=True),
            before_sleep=lambda state: self._note_retry(row, state),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            provider_id = retrying(channel.send, message, row["address"])
        except (TransientError, PermanentError) as exc:
            return self._dead(row, channel, str(exc))
        fault_point(FaultPoint.ALERTS_AFTER_CHANNEL_SEND)
        self._record(DeliveryUpdate(row["id"], "sent", provider_id=provider_id))
        if channel.name in self._dead_channels:
            self._dead_channels.discard(channel.name)
            self._report("resolved", channel.name, f"{channel.name} delivers again", row)
        return "sent"

    def _record(self, outcome: DeliveryUpdate) -> None:
        """Write ``outcome``, with whatever other outcomes are waiting, before returning."""
        with self._outcomes_lock:
            self._outcomes.append(outcome)
        with self._writer:
            # The writer before us may have taken ours already; then there is nothing left.
            with self._outcomes_lock:
                batch, self._outcomes = self._outcomes, []
            try:
                self.store.mark_deliveries(batch)
            except BaseException:
                # Back in the queue for the next writer: none of them may be dropped.
                with self._outcomes_lock:
                    self._outcomes[:0] = batch
                raise

    def _note_retry(self, row: dict[str, Any], state: Any) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        self.store.mark_delivery(row["id"], "sending", error=str(error),
                                 next_attempt_at=self.clock() + timedelta(seconds=wait))
        log.warning("%s to %s: %s; attempt %d, retrying in %.1fs", row["channel"], row["alert"]["subject"], error,
                    state.attempt_number + row["attempts"], wait)

    def _dead(self, row: dict[str, Any], channel: Channel, reason: str) -> str:
        self.store.mark_delivery(row["id"], "dead", error=reason)
        log.error("alert %s (%s) could not be delivered by %s: %s", row["alert"]["id"][:12], row["alert"]["title"],
                  channel.name, reason)
        self._dead_channels.add(channel.name)
        self._report("firing", channel.name, f"an alert could not be delivered by {channel.name}: {reason}", row)
        return "dead"

    def _report(self, status: str, channel: str, message: str, row: dict[str, Any]) -> None:
        event = PipelineEvent.reported("delivery_dead", channel, status, message, severity="critical",
                                       at=self.clock(), details={"alert": row["alert"]["id"][:12],
                                                                 "rule": row["alert"]["rule"]})
        try:
            self.report(event)
        except Exception:  # noqa: BLE001 - reporting a failure must not hide the failure itself
            log.exception("could not report %s", event.kind)

