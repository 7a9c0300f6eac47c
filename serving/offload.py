"""A small pool of processes for the heavy part of the expensive reads: history and bars read
Delta and turn thousands of rows into JSON, Python work that holds the interpreter's lock for
tenths of a second. Done in the API's own process (its thread pool), it held up the hot path
(``serving.hot``) for as long: under 100 ``/history`` requests a second from one key, GET one
prediction's p99 went from 2.6 ms to 143 ms (``bench/api_abuse.py``).

``OffloadPool`` is one per app: created with it, started by its lifespan and stopped with it. It has as many processes as a
worker runs expensive requests at once (``api_expensive_concurrency``, ``serving.bounds``), so a
job that got a slot never waits for a process. The processes run at a lower priority
(``NICENESS``): on a machine with few cores the API's process gets the CPU first. A job returns
the response's JSON bytes, serialized in the pool process, so the event loop only forwards them.

The jobs are here rather than beside their routes so that a pool process imports what they
need, not the whole API. A job's ``tickcast.core.errors`` come back as themselves (the API maps
them as it maps any other); a pool process that died (killed, out of memory) is a 503 for the
requests it held and a fresh pool for the next ones.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from serving.schemas import BarsResponse, PredictionHistoryResponse
from tickcast.catalog import predictions
from tickcast.core.errors import Unavailable
from tickcast.core.intervals import IntervalName

if TYPE_CHECKING:
    from tickcast.catalog.market import MarketStore
    from tickcast.core.settings import Settings

# Added to a pool process's nice value: the hot path's process wins the CPU when both want it.
NICENESS = 10

P = ParamSpec("P")
R = TypeVar("R")


# What a pool process keeps between jobs (the Delta tables stay open).
_store: MarketStore | None = None


def _state() -> MarketStore:
    if _store is None:
        raise RuntimeError("a job of serving.offload runs in an OffloadPool process")
    return _store


def _ready() -> None:
    """A job that does nothing: the pool is up."""


def _start_worker(settings: Settings, niceness: int) -> None:
    global _store
    from tickcast.catalog.market import MarketStore

    # Ctrl-C reaches the whole process group; the API stops its pool itself, in its lifespan.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(niceness)
    _store = MarketStore(settings)


class OffloadPool:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.size = settings.api_expensive_concurrency
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # Forked from multiprocessing's fork server, a process with one thread that has imported
        # the main module and the jobs' modules once: a new pool process costs a fork, not an
        # interpreter's start-up (as a spawned one would, on the CPU the hot path needs).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", __name__])
        return ProcessPoolExecutor(self.size, mp_context=context, initializer=_start_worker,
                                   initargs=(self.settings, NICENESS))

    async def start(self) -> None:
        if self._pool is None:
            self._pool = self._new_pool()
            # The first job starts the fork server, whose imports a submit would otherwise wait
            # for on the event loop; here, during start-up, and in a thread.
            await asyncio.wrap_future(await asyncio.to_thread(self._pool.submit, _ready))

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def run(self, job: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``job(*args)`` in a pool process; its result, or the exception it raised."""
        pool = self._pool
        if pool is None:
            raise Unavailable("the API's pool for expensive requests is not running (the app was not started)")
        try:
            return await asyncio.wrap_future(pool.submit(job, *args, **kwargs))
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise Unavailable("the process serving this request stopped unexpectedly; retry in 1 s") from None


# --- the jobs: each returns how many rows it found (none: the route checks the symbol is known,
# in the API's process, where the symbols are cached) and the response's JSON.


def history_body(symbol: str, start: datetime | None, end: datetime | None, limit: int) -> tuple[int, bytes]:
    found = predictions.history(_state().settings, symbol, start, end, limit)
    body = PredictionHistoryResponse(symbol=symbol, count=len(found), predictions=found).model_dump_json()
    return len(found), body.encode()


def bars_body(symbol: str, interval: IntervalName, limit: int) -> tuple[int, bytes]:
    bars = _state().bars.bars(symbol, interval, limit)
    body = BarsResponse(symbol=symbol, interval=interval, count=len(bars), bars=bars).model_dump_json()
    return len(bars), body.encode()
