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
from spark_jobs.ingest.progress import ProgressFile, progress_listener
from spark_jobs.ingest.ticks import TicksQuery
from tickcast.catalog import tables
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.ingest")


def run(settings: Settings, starting_offsets: str = "earliest", stop_after_seconds: float | None = None) -> None:
    """Run the ``ticks`` and ``bars`` queries until SIGTERM/SIGINT (or ``stop_after_seconds``)."""
    from spark_jobs.session import build_spark
    from tickcast.platform.status import progress_path

    if settings.ingest_niceness:
        os.nice(settings.ingest_niceness)  # before the JVM starts, which inherits it
    spark = build_spark(settings, "tickcast-ingest")
    spark.streams.addListener(progress_listener(ProgressFile(progress_path(settings))))
    tables.ensure_tables(spark, settings)
    # The bars query first: its start decides where it begins reading `ticks` (see BarsQuery).
    bars = BarsQuery(settings, spark)
    queries = [bars.start()]
    ticks = TicksQuery(settings, spark)
    try:
        queries.insert(0, ticks.start(starting_offsets))
        log.info(
            "ingest running: kafka %s topic %s -> %s; queries %s (checkpoints under %s)",
            settings.kafka_bootstrap_servers, settings.topic_ticks, tables.delta_dir(settings),
            ", ".join(q.name for q in queries), settings.checkpoint_dir,
        )
        stopping = _stop_on_signals()
        deadline = time.monotonic() + stop_after_seconds if stop_after_seconds else None
        while all(q.isActive for q in queries) and not stopping.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            queries[0].awaitTermination(1)
        failed = [q for q in queries if q.exception()]
        if failed:
            raise RuntimeError("; ".join(f"query {q.name} failed: {q.exception()}" for q in failed))
    finally:
        for query in queries:
            if query.isActive:
                _stop_between_batches(query)
        spark.stop()
        log.info("ingest stopped")


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
