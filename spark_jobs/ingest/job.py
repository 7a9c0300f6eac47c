"""``tickcast stream ingest``: the ``ticks`` query (the hot path) and the ``bars`` query
(downstream of it) in one Spark application, until SIGTERM/SIGINT.

How each keeps exactly once and decides the same on a replay is in ``spark_jobs.ingest``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from spark_jobs.ingest.bars import BarsQuery
from spark_jobs.ingest.progress import progress_listener
from spark_jobs.ingest.ticks import TicksQuery
from tickcast.catalog import tables
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.ingest")


QUERIES = ("ticks", "bars")


def run(settings: Settings, queries: tuple[str, ...] = QUERIES, starting_offsets: str = "earliest",
        stop_after_seconds: float | None = None) -> None:
    """Run ``queries`` (``ticks``, ``bars`` or both) until SIGTERM/SIGINT (or ``stop_after_seconds``).

    The platform runs each in a process of its own (program ``ingest`` the ticks, ``bars`` the
    bars, niced further); both in one process suit a laptop and the tests."""
    from spark_jobs.session import build_spark
    from tickcast.catalog.progress import ProgressFile, progress_path

    unknown = sorted(set(queries) - set(QUERIES))
    if unknown or not queries:
        raise ValueError(f"queries must be among {', '.join(QUERIES)}, not {', '.join(unknown) or 'none'}")
    program = "bars" if tuple(queries) == ("bars",) else "ingest"
    niceness = settings.bars_niceness if program == "bars" else settings.ingest_niceness
    if niceness:
        os.nice(niceness)  # before the JVM starts, which inherits it
    spark = build_spark(settings, f"tickcast-{program}")
    spark.streams.addListener(progress_listener(ProgressFile(progress_path(settings, program))))
    tables.ensure_tables(spark, settings)
    started: list = []
    try:
        if "bars" in queries:
            _claim_market_index(spark, settings)
        # The bars query first: its start decides where it begins reading `ticks` (see BarsQuery).
        if "bars" in queries:
            started.append(BarsQuery(settings, spark).start())
        if "ticks" in queries:
            started.insert(0, TicksQuery(settings, spark).start(starting_offsets))
        log.info(
            "%s running: kafka %s topic %s -> %s; queries %s (checkpoints under %s)",
            program, settings.kafka_bootstrap_servers, settings.topic_ticks, tables.delta_dir(settings),
            ", ".join(q.name for q in started), settings.checkpoint_dir,
        )
        stopping = _stop_on_signals()
        deadline = time.monotonic() + stop_after_seconds if stop_after_seconds else None
        while all(q.isActive for q in started) and not stopping.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            started[0].awaitTermination(1)
        failed = [q for q in started if q.exception()]
        if failed:
            raise RuntimeError("; ".join(f"query {q.name} failed: {q.exception()}" for q in failed))
    finally:
        for query in started:
            if query.isActive:
                _stop_between_batches(query)
        spark.stop()
        log.info("%s stopped", program)


def _claim_market_index(spark, settings: Settings) -> None:
    """The bars query computes features against the configured index: refuse to start if the
    stored features record another one (mixing two would corrupt them), else record it."""
    from tickcast.catalog import featureindex
    from tickcast.core.intervals import INTERVAL_NAMES

    for interval in INTERVAL_NAMES:
        featureindex.check(settings, interval)
    featureindex.record(spark, settings, *INTERVAL_NAMES)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the run loop stops the query between batches."""
    stopping = threading.Event()

    def _request_stop(signum, _frame):
        log.info("signal %s: stopping after the current batch", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    return stopping


def _stop_between_batches(query, patience_seconds: float = 300.0) -> None:
    """Let the micro-batch in flight finish before stopping: ``query.stop()`` interrupts it.

    An interrupted batch is not lost (it is replayed, exactly once, on the next start), but
    stopping between batches leaves the tables complete up to the last offset read.
    """
    deadline = time.monotonic() + patience_seconds
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
