"""The latest predictions as the API sends them: the stored JSON as it is, with the request-time
fields appended (``data_freshness_sec``, ``stale``), never re-encoded.

The predictions themselves are held by ``tickcast.scoring.live_predictions.LivePredictions``
(fed from Kafka or the online store); this is the API's view of them, for the hot path
(``serving.hot``), the two latest-prediction routes and the WebSocket's updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from tickcast.scoring.live_predictions import Entry, LivePredictions


def with_freshness(entry: Entry, now: float, extra: bytes = b"") -> bytes:
    """The entry's JSON with ``data_freshness_sec`` and ``stale`` at ``now`` (epoch seconds),
    then ``extra`` (``,"name":value`` pairs)."""
    age = now - entry.data_timestamp
    # The stored JSON ends with "}": append the request-time fields instead of re-encoding it.
    # Stale is Entry.is_stale (tickcast.core.predictions.is_stale), inline on the hot path.
    return b"%s,\"data_freshness_sec\":%.3f,\"stale\":%s%s}" % (
        entry.payload[:-1], age, b"true" if age > entry.stale_after else b"false", extra)


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
        return with_freshness(entry, now, extra)

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
                found.append(with_freshness(entry, now))
                self._observe(max(now - entry.data_timestamp, 0.0))
        return b'{"count":%d,"predictions":[%s],"missing":%s}' % (
            len(found), b",".join(found), orjson.dumps(missing))
