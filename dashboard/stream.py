"""``/stream/watchlist``: new predictions pushed to the browser as server-sent events.

Each event (``rows``) is a JSON list of watchlist rows (``dashboard.data.watchlist_row``), one per
symbol whose prediction changed, gathered for at most ``BATCH_SECONDS`` so that a burst of 5,000
new predictions is a few events, not 5,000. The browser applies them to the grid as row
transactions (``assets/watchlist.js``): no reload, no poll.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard.data import Closes, DashboardData, watchlist_row

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tickcast.scoring.live_predictions import Entry

STREAM_PATH = "/stream/watchlist"
BATCH_SECONDS = 0.1
BATCH_MAX = 2000
# Open streams per dashboard process; each holds a queue of at most the live service's bound.
MAX_STREAMS = 200
PING_SECONDS = 15
# A whole scoring cycle of 5,000 symbols waits here if the browser is slow to take it.
QUEUE_SIZE = 10_000


def install(server: FastAPI, data: DashboardData) -> None:
    from sse_starlette.sse import EventSourceResponse

    from tickcast.scoring.live_predictions import Subscriber

    open_streams = 0

    @server.get(STREAM_PATH, include_in_schema=False)
    async def watchlist_stream(request: Request) -> Response:
        nonlocal open_streams
        if open_streams >= MAX_STREAMS:
            return JSONResponse({"detail": f"at most {MAX_STREAMS} live views per dashboard process; "
                                           "close another tab"}, status_code=429)
        live = await data.live()

        async def events():
            # Joined here, where the finally below is sure to run: a stream cancelled before its
            # first step never enters its body, and a join made outside it would never be undone.
            nonlocal open_streams
            subscriber = Subscriber(queue=asyncio.Queue(QUEUE_SIZE))
            live.join(subscriber)
            live.subscribe_all(subscriber)
            open_streams += 1
            try:
                while True:
                    first = await subscriber.queue.get()
                    batch = [first]
                    deadline = time.monotonic() + BATCH_SECONDS
                    while len(batch) < BATCH_MAX:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            batch.append(await asyncio.wait_for(subscriber.queue.get(), remaining))
                        except TimeoutError:
                            break
                    rows = _rows(await asyncio.to_thread(data.closes), batch)
                    if rows:
                        yield {"event": "rows", "data": orjson.dumps(rows).decode()}
            finally:
                live.leave(subscriber)
                open_streams -= 1

        return EventSourceResponse(events(), ping=PING_SECONDS, headers={"Cache-Control": "no-store"})


def _rows(closes: dict[str, Closes], entries: list[Entry]) -> list[dict]:
    now = datetime.now(UTC)
    # The newest of a symbol's entries in the batch: they arrive in order.
    latest = {entry.symbol: entry for entry in entries}
    return [watchlist_row(orjson.loads(entry.payload), closes.get(symbol), now) for symbol, entry in latest.items()]
