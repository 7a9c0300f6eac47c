"""The latest prediction per symbol, held in memory and pushed to WebSocket subscribers.

One task per process polls the online store every ``api_poll_seconds`` for rows written
since the last poll. GET requests read the in-memory copy through ``LatestPredictions`` (no
IO on the hot path), and every changed prediction goes to the WebSocket clients subscribed
to its symbol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from tickcast.catalog.online import OnlineStore

log = logging.getLogger("tickcast.serving.live")

# A client that cannot keep up loses its oldest pending updates, never the server's memory.
CLIENT_QUEUE = 1000


@dataclass(frozen=True)
class Entry:
    """One symbol's latest prediction, kept as JSON ready to send."""

    payload: bytes
    data_timestamp: float  # epoch seconds
    model_name: str
    model_version: str


def _entry(payload: str) -> Entry:
    parsed = orjson.loads(payload)
    stamp = datetime.fromisoformat(parsed["data_timestamp"]).timestamp()
    return Entry(payload.encode(), stamp, parsed["model_name"], parsed["model_version"])


@dataclass(eq=False)
class Subscriber:
    websocket: WebSocket
    symbols: set[str] = field(default_factory=set)
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    dropped: int = 0

    def offer(self, message: bytes) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class LivePredictions:
    def __init__(self, store: OnlineStore, poll_seconds: float):
        self.store = store
        self.poll_seconds = poll_seconds
        # Updated in place, never replaced: LatestPredictions holds this very dict.
        self.latest: dict[str, Entry] = {}
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.clients: set[Subscriber] = set()
        self._since: str | None = None
        self._task: asyncio.Task | None = None
        self.last_model: tuple[str, str] | None = None
        self.on_refresh: Callable[[], None] | None = None

    def refresh(self) -> list[tuple[str, Entry]]:
        """Read what changed since the last call into memory; returns the changes."""
        changed = []
        for symbol, predicted_at, payload in self.store.changed_since(self._since):
            entry = _entry(payload)
            self.latest[symbol] = entry
            changed.append((symbol, entry))
            self._since = predicted_at
            self.last_model = (entry.model_name, entry.model_version)
        return changed

    def publish(self, changed: list[tuple[str, Entry]]) -> None:
        for symbol, entry in changed:
            listeners = self.subscribers.get(symbol)
            if listeners:
                message = b'{"type":"prediction_update","prediction":' + entry.payload + b"}"
                for subscriber in listeners:
                    subscriber.offer(message)

    async def run(self) -> None:
        while True:
            try:
                changed = await asyncio.to_thread(self.refresh)
                self.publish(changed)
                if changed and self.on_refresh is not None:
                    self.on_refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a locked or missing file must not end the poller
                log.exception("reading new predictions failed; retrying")
            await asyncio.sleep(self.poll_seconds)

    def start(self) -> None:
        try:
            self.refresh()
            if self.on_refresh is not None:
                self.on_refresh()
        except Exception:  # noqa: BLE001 - the API starts anyway; /healthz reports the store
            log.exception("reading the online store failed at start-up; the poller keeps trying")
        self._task = asyncio.get_running_loop().create_task(self.run(), name="live-predictions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            try:
                await task
            except asyncio.CancelledError:
                pass

    # -- subscriptions ----------------------------------------------------------------------

    def join(self, subscriber: Subscriber) -> None:
        self.clients.add(subscriber)

    def leave(self, subscriber: Subscriber) -> None:
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


def _with_freshness(payload: bytes, data_timestamp: float, now: float, extra: bytes = b"") -> bytes:
    # The stored JSON ends with "}": append the request-time fields instead of re-encoding it.
    return b"%s,\"data_freshness_sec\":%.3f%s}" % (payload[:-1], now - data_timestamp, extra)


class LatestPredictions:
    """The latest predictions as response bodies: all the hot path and the two latest-prediction
    routes need, so that neither holds more of the app than this.

    Every answered prediction's data age goes to ``freshness``.
    """

    def __init__(self, live: LivePredictions, freshness: Histogram):
        self._latest = live.latest
        self._observe = freshness.observe
        # The dict's own method, not a Python one: the hot path asks this of every request.
        self.has: Callable[[str], bool] = self._latest.__contains__

    def latest_body(self, symbol: str, extra: bytes = b"") -> bytes | None:
        """The latest prediction's JSON with its freshness (and ``extra`` fields); None when there is none."""
        entry = self._latest.get(symbol)
        if entry is None:
            return None
        now = time.time()
        self._observe(max(now - entry.data_timestamp, 0.0))
        return _with_freshness(entry.payload, entry.data_timestamp, now, extra)

    def batch_body(self, wanted: list[str]) -> bytes:
        """``{"count", "predictions", "missing"}`` for these symbols, in their order."""
        now = time.time()
        found, missing = [], []
        latest = self._latest
        for symbol in wanted:
            entry = latest.get(symbol)
            if entry is None:
                missing.append(symbol)
            else:
                found.append(_with_freshness(entry.payload, entry.data_timestamp, now))
                self._observe(max(now - entry.data_timestamp, 0.0))
        return b'{"count":%d,"predictions":[%s],"missing":%s}' % (
            len(found), b",".join(found), orjson.dumps(missing))
