"""The ingest query: Kafka ``ticks`` in, each micro-batch through the stages of ``stages``.

How a replayed micro-batch comes out the same, exactly once, is in the package docstring
(``spark_jobs.ingest``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.ingest import stages
from spark_jobs.ingest.progress import ProgressFile, progress_listener
from spark_jobs.ingest.stages import Batch
from spark_jobs.ingest.watermarks import FeedWatermarks
from tickcast.catalog import tables
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("tickcast.ingest")

QUERY_NAME = "ingest"


def _app_id(checkpoint: Path) -> str:
    """Identity of this checkpoint for idempotent Delta writes; a new checkpoint gets a new one."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    marker = checkpoint / "tickcast-app-id"
    if not marker.exists():
        marker.write_text(f"tickcast-ingest-{uuid.uuid4().hex[:12]}")
    return marker.read_text().strip()


class IngestJob:
    """The query and what outlives its micro-batches: the session, the checkpoint's app id,
    the feed watermarks and the quality gate."""

    def __init__(self, settings: Settings, spark: SparkSession):
        from tickcast.quality import QualityGate

        self.settings = settings
        self.spark = spark
        self.checkpoint = settings.checkpoint_dir / QUERY_NAME
        self.app_id = _app_id(self.checkpoint)
        self.watermarks = FeedWatermarks(self.checkpoint / "feed-watermarks")
        self.gate = QualityGate(settings)

    def start(self, starting_offsets: str = "earliest"):
        tables.ensure_tables(self.spark, self.settings)
        if self.settings.feast_push_enabled:
            from tickcast.catalog import featurestore

            # Registering the repo (and importing Feast) before the first batch keeps that
            # batch as quick as the others.
            featurestore.apply(self.settings)
        reader = self.spark.readStream.format("kafka")
        for key, value in self.settings.spark_kafka_options().items():
            reader = reader.option(key, value)
        source = (
            reader.option("subscribe", self.settings.topic_ticks)
            .option("startingOffsets", starting_offsets)
            .option("maxOffsetsPerTrigger", str(self.settings.ingest_max_offsets_per_trigger))
            # A gap in the topic (retention, a recreated topic) is logged, not fatal.
            .option("failOnDataLoss", "false")
            .load()
        )
        return (
            source.writeStream.queryName(QUERY_NAME)
            .foreachBatch(self.process_batch)
            .option("checkpointLocation", str(self.checkpoint / "spark"))
            .trigger(processingTime=f"{self.settings.ingest_trigger_seconds} seconds")
            .start()
        )

    def process_batch(self, raw: DataFrame, batch_id: int) -> None:
        batch = Batch.open(raw.sparkSession, self.app_id, batch_id, self.watermarks.before(batch_id))
        with batch.step("parse"):
            parsed = stages.parse(self, batch, raw)
        with batch.step("classify"):
            classified = stages.classify(self, batch, parsed)
        with batch.step("check_ticks"):
            verdicts = stages.check_ticks(self, batch, classified)
        with batch.step("quarantine"):
            stages.quarantine(self, batch, verdicts)
        with batch.step("ticks"):
            stages.store_ticks(self, batch, verdicts)
        for interval in INTERVAL_NAMES:
            with batch.step(tables.bars(interval)):
                stages.bars(self, batch, verdicts, interval)
        with batch.step("feeds"):
            feeds = stages.feeds(batch, verdicts)
        for interval in INTERVAL_NAMES:
            with batch.step(f"features_{interval}"):
                stages.features(self, batch, interval, feeds.earliest)
        with batch.step("quality"):
            stages.record_quality(self, batch)
        with batch.step("watermarks"):
            self.watermarks.save(batch_id, feeds.watermarks)
        batch.release()
        log.info(
            "batch %d: %d ticks stored, %d quarantined, %d symbols updated in %.2fs (%s)",
            batch_id, feeds.stored, feeds.quarantined, len(feeds.earliest), time.monotonic() - batch.started,
            ", ".join(f"{k} {v:.2f}s" for k, v in batch.steps.items()),
        )


def run(settings: Settings, starting_offsets: str = "earliest", stop_after_seconds: float | None = None) -> None:
    """Run the ingest query until SIGTERM/SIGINT (or ``stop_after_seconds``)."""
    from spark_jobs.session import build_spark
    from tickcast.platform.status import progress_path

    if settings.ingest_niceness:
        os.nice(settings.ingest_niceness)  # before the JVM starts, which inherits it
    spark = build_spark(settings, "tickcast-ingest")
    spark.streams.addListener(progress_listener(ProgressFile(progress_path(settings)), QUERY_NAME))
    job = IngestJob(settings, spark)
    query = job.start(starting_offsets)
    log.info(
        "ingest running: kafka %s topic %s -> %s (checkpoint %s)",
        settings.kafka_bootstrap_servers, settings.topic_ticks, tables.delta_dir(settings), job.checkpoint,
    )
    stopping = _stop_on_signals()
    deadline = time.monotonic() + stop_after_seconds if stop_after_seconds else None
    try:
        while query.isActive and not stopping.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            query.awaitTermination(1)
        if query.exception():
            raise RuntimeError(f"ingest query failed: {query.exception()}")
    finally:
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
