"""Query ``bars``, downstream of the hot path: Delta ``ticks`` read as a stream -> the ticks'
quality audit -> bars of each interval (one MERGE each) -> features of the bars that changed
(Delta and the Feast online store) -> quality records. Its own trigger and checkpoint, so none
of this delays a tick on its way into ``ticks``.

Each micro-batch is a set of ``ticks`` commits; its writes carry (app id, batch id), so a
replayed batch (same commits, by the checkpoint) is skipped table by table.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from spark_jobs.ingest import stages
from spark_jobs.ingest.checkpoints import app_id, has_offsets
from spark_jobs.ingest.stages import Batch
from tickcast.catalog import tables
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger("tickcast.ingest")

QUERY_NAME = "bars"
# The checkpoint of the one query that stored ticks and folded bars before the two were split.
LEGACY_QUERY = "ingest"


class BarsQuery:
    """The ``bars`` query and what outlives its micro-batches: the session, the checkpoint's app
    id and the quality gate."""

    def __init__(self, settings: Settings, spark: SparkSession):
        from tickcast.catalog.events import EventPublisher, StateReporter
        from tickcast.quality import QualityGate

        self.settings = settings
        self.spark = spark
        self.checkpoint = settings.checkpoint_dir / QUERY_NAME
        self.app_id = app_id(self.checkpoint, QUERY_NAME)
        self.gate = QualityGate(settings)
        # Failed audits, for the alert engine (a produce when the state changes, or each minute).
        self.reporter = StateReporter(EventPublisher(settings, "ingest"), f"ingest:{QUERY_NAME}")

    def start(self, *, available_now: bool = False) -> StreamingQuery:
        """Start the query; ``available_now``: fold what ``ticks`` holds, then stop (benchmarks)."""
        settings = self.settings
        if settings.feast_push_enabled:
            from tickcast.catalog import featurestore

            # Registering the repo (and importing Feast) before the first batch keeps that
            # batch as quick as the others.
            featurestore.apply(settings)
        reader = self.spark.readStream.format("delta")
        if not has_offsets(self.checkpoint / "spark") and has_offsets(settings.checkpoint_dir / LEGACY_QUERY / "spark"):
            # The single ingest query of earlier releases folded the ticks it stored into bars
            # itself: a first bars query beside its checkpoint starts after them.
            log.info("new bars checkpoint after a single-query ingest: folding the ticks stored from now on")
            reader = reader.option("startingVersion", "latest")
        writer = (
            reader.load(tables.table_path(settings, tables.TICKS))
            .writeStream.queryName(QUERY_NAME)
            .foreachBatch(self.process_batch)
            .option("checkpointLocation", str(self.checkpoint / "spark"))
        )
        if available_now:
            return writer.trigger(availableNow=True).start()
        return writer.trigger(processingTime=f"{settings.bars_trigger_seconds} seconds").start()

    def process_batch(self, ticks: DataFrame, batch_id: int) -> None:
        batch = Batch.open(ticks.sparkSession, self.app_id, batch_id)
        ticks = ticks.persist()
        try:
            with batch.step("feeds"):
                feeds = stages.feeds(self, batch, ticks)
            if not feeds.ticks:
                return
            with batch.step("audit"):
                stages.audit_ticks(self, batch, ticks)
            for interval in INTERVAL_NAMES:
                with batch.step(tables.bars(interval)):
                    stages.bars(self, batch, ticks, interval)
            for interval in INTERVAL_NAMES:
                with batch.step(f"features_{interval}"):
                    stages.features(self, batch, interval, feeds.earliest)
            with batch.step("quality"):
                stages.record_quality(self, batch)
        finally:
            ticks.unpersist()
        first, last = feeds.ticks_batches or (-1, -1)
        log.info(
            "bars batch %d: %d ticks of ticks batches %d-%d folded, %d symbols updated in %.2fs (%s)",
            batch_id, feeds.ticks, first, last, len(feeds.earliest), time.monotonic() - batch.started,
            ", ".join(f"{k} {v:.2f}s" for k, v in batch.steps.items()),
        )

