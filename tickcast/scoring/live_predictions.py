"""The latest prediction per symbol, held in memory and pushed to subscribers: the service the
API (its hot reads and ``/ws/predictions``) and the dashboard share, free of any web framework.

Where new predictions come from (``LivePredictions.start`` logs which):

- the Kafka ``predictions`` topic, when the scorer publishes there (``scorer_publish_kafka``,
  the default): a thread per process follows it (``tickcast.scoring.prediction_feed``) and hands
  the payloads to the event loop in batches. The online store is read once at start and again
  after the topic's end offsets are taken (so nothing published in between is missed), then
  only every ``RESYNC_SECONDS`` as a safety net for predictions whose publishing failed;
- the online store, polled every ``poll_seconds`` for rows written since the last poll: when
  publishing to Kafka is off, and while the broker or the topic cannot be reached (connecting
  at start, an outage), until it can.

Both go through ``ingest``: of two predictions of a symbol the one with the newer
(``data_timestamp``, ``predicted_at``) is kept, whatever order they arrive in and however
often, and a subscriber gets one only when it differs from the one held in more than its
``predicted_at`` (the same prediction made again, or delivered twice, is not pushed).

Readers: ``latest`` (symbol -> ``Entry``) is the current state, read on the event loop (no IO);
a ``Subscriber`` gets each new ``Entry`` of its symbols (``subscribe``) or of every symbol
(``subscribe_all``) on its asyncio queue. Each ``Entry`` carries what its staleness takes
(``Entry.is_stale``, the rule of ``tickcast.core.predictions.is_stale``), computed at ingest.
Nothing starts on import: ``start`` (on a running event loop) starts the poll and the feed,
``stop`` ends them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson

from tickcast.core.predictions import stale_after
from tickcast.scoring.prediction_feed import KafkaPredictionFeed

if TYPE_CHECKING:
    from tickcast.catalog.online import PredictionStore
    from tickcast.core.kafka_auth import KafkaRole
    from tickcast.core.settings import Settings

log = logging.getLogger(__name__)

# A subscriber that cannot keep up loses its oldest pending updates, never the process's memory.
CLIENT_QUEUE = 1000
# While Kafka is followed, the online store is still read this often for rows the topic did not
# bring (a publish that failed after the store write); each row held already costs a comparison.
RESYNC_SECONDS = 30.0
# Payloads parsed and applied per step on the event loop, between which it serves requests
# (~1 ms of work at 250).
CHUNK = 250
# The fields that may differ between two predictions that are the same prediction.
IGNORED_IN_CHANGES = ("predicted_at",)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Entry:
    """One symbol's latest prediction, kept as JSON ready to send."""

    payload: bytes
    data_timestamp: float  # epoch seconds
    # Seconds: stale_after(horizon), so that staleness costs a subtraction and a comparison.
    stale_after: float
    model_name: str
    model_version: str
    symbol: str
    # (data_timestamp, predicted_at) in epoch microseconds: of two, the greater is newer.
    order: tuple[int, int]
    # The payload without the fields of IGNORED_IN_CHANGES: equal means the same prediction.
    content: bytes

    def is_stale(self, now: float) -> bool:
        """At ``now`` (epoch seconds): ``tickcast.core.predictions.is_stale`` of its prediction."""
        return now - self.data_timestamp > self.stale_after


def _entry(payload: str | bytes) -> Entry:
    """An Entry of contract JSON; ValueError, KeyError or TypeError when it is not that."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    parsed = orjson.loads(raw)
    data_ts = datetime.fromisoformat(parsed["data_timestamp"])
    predicted_at = datetime.fromisoformat(parsed["predicted_at"])
    content = orjson.dumps({k: v for k, v in parsed.items() if k not in IGNORED_IN_CHANGES})
    return Entry(raw, data_ts.timestamp(), stale_after(parsed["horizon"]).total_seconds(),
                 parsed["model_name"], parsed["model_version"], parsed["symbol"],
                 ((data_ts - _EPOCH) // _MICROSECOND, (predicted_at - _EPOCH) // _MICROSECOND), content)


@dataclass(eq=False)
class Subscriber:
    """One consumer of new predictions, whatever carries them on (a WebSocket, a dashboard).

    ``LivePredictions.publish`` puts each new ``Entry`` of ``symbols`` - or of every symbol,
    once ``LivePredictions.subscribe_all`` set ``every_symbol`` - on ``queue``; the consumer
    awaits ``queue.get()`` on the event loop that runs ``LivePredictions``. When the queue is
    full the oldest pending entry is dropped and counted in ``dropped`` (a consumer that sees
    it grow can read ``LivePredictions.latest`` again). Pass a larger queue for many symbols:
    ``Subscriber(queue=asyncio.Queue(10_000))`` holds a whole scoring cycle of a big watchlist.
    """

    symbols: set[str] = field(default_factory=set)
    queue: asyncio.Queue[Entry] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    # Set by LivePredictions.subscribe_all / unsubscribe_all, never by hand.
    every_symbol: bool = field(default=False, init=False)
    dropped: int = 0

    def offer(self, entry: Entry) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(entry)


class LivePredictions:
    def __init__(self, store: PredictionStore, poll_seconds: float, settings: Settings | None = None,
                 client: KafkaRole = "api"):
        """``settings``: follow its Kafka ``predictions`` topic when ``scorer_publish_kafka`` is
        on; without them (or with it off) the online store is polled every ``poll_seconds``.
        ``client``: the Kafka principal this process reads as, which names it to the broker
        (``KafkaPredictionFeed``)."""
        self.store = store
        self.poll_seconds = poll_seconds
        self.settings = settings
        self.client = client
        # Updated in place, never replaced: readers may hold this very dict.
        self.latest: dict[str, Entry] = {}
        self.subscribers: dict[str, set[Subscriber]] = {}
        # Subscribers of every symbol (subscribe_all).
        self.everyone: set[Subscriber] = set()
        self.clients: set[Subscriber] = set()
        self._since: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.feed: KafkaPredictionFeed | None = None
        self.last_model: tuple[str, str] | None = None
        self.on_refresh: Callable[[], None] | None = None
        # Counts since start: payloads seen, kept (newer than the one held), pushed (changed).
        self.counts = {"seen": 0, "kept": 0, "pushed": 0}

    @property
    def source(self) -> str:
        """``kafka`` while the topic is followed, else ``store`` (the poll)."""
        return "kafka" if self.feed is not None and self.feed.healthy else "store"

    # -- applying predictions ---------------------------------------------------------------

    def apply(self, entries: Iterable[Entry]) -> list[Entry]:
        """Keep each entry that is newer than its symbol's; returns those that changed it."""
        changed = []
        latest = self.latest
        seen = kept = 0
        for entry in entries:
            seen += 1
            current = latest.get(entry.symbol)
            if current is not None and entry.order <= current.order:
                continue
            latest[entry.symbol] = entry
            kept += 1
            self.last_model = (entry.model_name, entry.model_version)
            if current is None or entry.content != current.content:
                changed.append(entry)
        self.counts["seen"] += seen
        self.counts["kept"] += kept
        self.counts["pushed"] += len(changed)
        return changed

    def ingest(self, payloads: Iterable[str | bytes]) -> int:
        """Parse, apply and push payloads (contract JSON); returns how many were kept."""
        entries = []
        for payload in payloads:
            try:
                entries.append(_entry(payload))
            except (ValueError, KeyError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                log.warning("a prediction that is not the contract's JSON was skipped: %s", exc)
        before = self.counts["kept"]
        self.publish(self.apply(entries))
        kept = self.counts["kept"] - before
        if kept and self.on_refresh is not None:
            self.on_refresh()
        return kept

    async def ingest_chunked(self, payloads: list) -> None:
        """``ingest`` in steps of CHUNK, letting the loop serve requests in between."""
        for start in range(0, len(payloads), CHUNK):
            self.ingest(payloads[start:start + CHUNK])
            if start + CHUNK < len(payloads):
                await asyncio.sleep(0)

    def publish(self, changed: list[Entry]) -> None:
        """Offer each changed entry to the subscribers of its symbol and of every symbol."""
        everyone = self.everyone
        for entry in changed:
            for subscriber in everyone:
                subscriber.offer(entry)
            listeners = self.subscribers.get(entry.symbol)
            if listeners:
                for subscriber in listeners:
                    if not subscriber.every_symbol:  # it had this one above
                        subscriber.offer(entry)

    # -- the online store --------------------------------------------------------------------

    def _read_store(self) -> list[str]:
        """Payloads of the rows written since the last read (a worker thread may call this)."""
        rows = self.store.changed_since(self._since)
        if rows:
            self._since = rows[-1][1]
        return [payload for _symbol, _predicted_at, payload in rows]

    def refresh(self) -> int:
        """Read what changed in the store since the last call into memory, at once."""
        return self.ingest(self._read_store())

    def _read_whole_store(self) -> list[bytes]:
        """Every row of the store (the feed's catch-up, on its thread)."""
        return [payload.encode() for _symbol, _predicted_at, payload in self.store.changed_since(None)]

    async def _poll(self) -> None:
        next_resync = time.monotonic() + RESYNC_SECONDS
        while True:
            try:
                now = time.monotonic()
                if self.source == "store" or now >= next_resync:
                    next_resync = now + RESYNC_SECONDS
                    await self.ingest_chunked(await asyncio.to_thread(self._read_store))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a locked or missing file must not end the poller
                log.exception("reading new predictions failed; retrying")
            await asyncio.sleep(self.poll_seconds)

    # -- the Kafka topic --------------------------------------------------------------------

    async def _drain(self, ready: asyncio.Event) -> None:
        """Apply the batches the feed thread queued, whenever it says there are some."""
        import queue

        assert self.feed is not None
        batches = self.feed.batches
        while True:
            await ready.wait()
            ready.clear()
            while True:
                try:
                    batch = batches.get_nowait()
                except queue.Empty:
                    break
                try:
                    await self.ingest_chunked(batch)
                except Exception:  # noqa: BLE001 - one bad batch must not end the feed
                    log.exception("applying predictions from Kafka failed")

    def _start_feed(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.settings is not None
        ready = asyncio.Event()

        def notify() -> None:  # on the feed's thread
            loop.call_soon_threadsafe(ready.set)

        self.feed = KafkaPredictionFeed(self.settings, catch_up=self._read_whole_store, notify=notify,
                                        client=self.client)
        self._tasks.append(loop.create_task(self._drain(ready), name="live-predictions-kafka"))
        self.feed.start()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Read the store, then follow the topic or poll the store (call it on the event loop)."""
        loop = asyncio.get_running_loop()
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - the process starts anyway; the poller keeps trying
            log.exception("reading the online store failed at start-up; the poller keeps trying")
        settings = self.settings
        if settings is not None and settings.scorer_publish_kafka:
            log.info("predictions: from Kafka topic %r on %s, the online store read every %.0fs besides; "
                     "until the topic is followed (and whenever it cannot be), the online store polled every %gs",
                     settings.topic_predictions, settings.kafka_bootstrap_servers, RESYNC_SECONDS,
                     self.poll_seconds)
            self._start_feed(loop)
        else:
            log.info("predictions: polling the online store every %gs (%s)", self.poll_seconds,
                     "publishing to Kafka is off (TICKCAST_SCORER_PUBLISH_KAFKA)" if settings is not None
                     else "no Kafka settings given")
        self._tasks.append(loop.create_task(self._poll(), name="live-predictions-poll"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            if task.get_loop() is asyncio.get_running_loop():
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        feed, self.feed = self.feed, None
        if feed is not None:
            await asyncio.to_thread(feed.stop)

    # -- subscriptions (on the event loop) ----------------------------------------------------

    def join(self, subscriber: Subscriber) -> None:
        """Count a subscriber as a client (``clients``); ``leave`` undoes all it subscribed."""
        self.clients.add(subscriber)

    def leave(self, subscriber: Subscriber) -> None:
        self.unsubscribe_all(subscriber)
        self.unsubscribe(subscriber, list(subscriber.symbols))
        self.clients.discard(subscriber)

    def subscribe(self, subscriber: Subscriber, symbols: list[str]) -> None:
        for symbol in symbols:
            subscriber.symbols.add(symbol)
            self.subscribers.setdefault(symbol, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber, symbols: list[str]) -> None:
        for symbol in symbols:
            subscriber.symbols.discard(symbol)
            listeners = self.subscribers.get(symbol)
            if listeners is not None:
                listeners.discard(subscriber)
                if not listeners:
                    del self.subscribers[symbol]

    def subscribe_all(self, subscriber: Subscriber) -> None:
        """Offer ``subscriber`` every symbol's new predictions (once each, whatever its
        ``symbols``). Nothing is offered for what is held already: read ``latest`` right after
        this call, on the loop, for that - no prediction falls between the two."""
        subscriber.every_symbol = True
        self.everyone.add(subscriber)

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Back to ``subscriber.symbols`` only."""
        subscriber.every_symbol = False
        self.everyone.discard(subscriber)
