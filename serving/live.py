"""The latest prediction per symbol, held in memory and pushed to WebSocket subscribers.

One task per process polls the online store every ``api_poll_seconds`` for rows written
since the last poll. GET requests read the in-memory copy (no IO on the hot path), and
every changed prediction goes to the WebSocket clients subscribed to its symbol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket

if TYPE_CHECKING:
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
