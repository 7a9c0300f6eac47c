"""The hot path, query ``ticks``: Kafka -> parse and validate -> dedupe and lateness -> one
idempotent append to Delta ``ticks`` (and to ``quarantine`` when the batch has rejects).

Nothing else runs here: bars, features and the quality audit read ``ticks`` as a Delta stream
in the ``bars`` query (``spark_jobs.ingest.bars``).

* Validity is the tick rule table compiled to Spark expressions (``transforms.parse_ticks``);
  "in the future" is judged against each record's Kafka timestamp.
* Duplicates: the JVM operator ``FirstCopy`` keeps each accepted msg_id in the RocksDB state
  store, versioned with the checkpoint, so a replayed batch reads the state its first run read.
* Lateness: the feed watermarks the previous batch saved (``watermarks``), a small broadcast
  join.
* Each append carries the Delta transaction id (app id, batch id), so a replayed batch that
  had committed is skipped table by table.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

from spark_jobs.ingest.checkpoints import app_id, has_offsets
from spark_jobs.ingest.watermarks import FeedWatermarks, advance
from tickcast.catalog import tables
from tickcast.catalog.events import EventPublisher, StateReporter
from tickcast.core.faults import FaultPoint, fault_point
from tickcast.core.kafka_auth import SPARK_GROUP_PREFIX
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger("tickcast.ingest")

QUERY_NAME = "ticks"

QUARANTINE_COLUMNS = (
    "reason", "stage", "raw", "msg_id", "symbol", "ts", "source",
    "kafka_topic", "kafka_partition", "kafka_offset",
)
# What a quarantined record keeps of itself, besides its reason and stage.
RECORD_COLUMNS = QUARANTINE_COLUMNS[2:]
TICK_COLUMNS = (
    "msg_id", "symbol", "ts", "price", "volume", "bid", "ask", "source", "produced_at",
    "schema_version", "kafka_partition", "kafka_offset",
)


class TicksQuery:
    """The ``ticks`` query and what outlives its micro-batches: the checkpoint's app id and the
    feed watermarks."""

    def __init__(self, settings: Settings, spark: SparkSession):
        self.settings = settings
        self.spark = spark
        self.checkpoint = settings.checkpoint_dir / QUERY_NAME
        self.app_id = app_id(self.checkpoint, QUERY_NAME)
        self.watermarks = FeedWatermarks(self.checkpoint / "feed-watermarks")
        # Quarantine spikes, for the alert engine: a produce when the state changes (or each minute).
        self.reporter = StateReporter(EventPublisher(settings, "ingest"), f"ingest:{QUERY_NAME}")

    def start(self, starting_offsets: str = "earliest", *, available_now: bool = False) -> StreamingQuery:
        """Start the query; ``available_now``: drain what the topic holds, then stop (benchmarks)."""
        from pyspark.sql import functions as F

        from spark_jobs import transforms as T

        settings = self.settings
        reader = self.spark.readStream.format("kafka")
        for key, value in settings.spark_kafka_options("ingest").items():
            reader = reader.option(key, value)
        source = (
            reader.option("subscribe", settings.topic_ticks)
            # The group ids Spark makes up start with the prefix the ingest principal may use.
            .option("groupIdPrefix", SPARK_GROUP_PREFIX)
            .option("startingOffsets", self._starting_offsets(starting_offsets))
            .option("maxOffsetsPerTrigger", str(settings.ingest_max_offsets_per_trigger))
            # Offsets gone from the topic (retention, a recreated topic) stop the query with an
            # error that names them, rather than skipping them quietly.
            .option("failOnDataLoss", "true")
            .load()
        )
        parsed = T.parse_ticks(source, F.col("timestamp"), settings.future_tolerance_seconds)
        marked = T.mark_duplicates(T.mark_first_copies(parsed, settings.dedupe_memory_seconds))
        writer = (
            marked.writeStream.queryName(QUERY_NAME)
            .foreachBatch(self.process_batch)
            .option("checkpointLocation", str(self.checkpoint / "spark"))
        )
        if available_now:
            return writer.trigger(availableNow=True).start()
        return writer.trigger(processingTime=f"{settings.ingest_trigger_seconds} seconds").start()

    def _starting_offsets(self, requested: str) -> str:
        """``requested`` for a new platform; for a new checkpoint beside tables that already hold
        ticks (a lost or replaced checkpoint), the offsets after the last record they hold, so
        nothing is stored twice."""
        if has_offsets(self.checkpoint / "spark"):
            return requested
        resume = stored_offsets(self.spark, self.settings)
        if not resume:
            return requested
        from tickcast.catalog.topics import partitions

        topic = self.settings.topic_ticks
        # Kafka wants every partition named: one the tables never saw starts at its earliest (-2).
        offsets = {str(p): resume[p] + 1 if p in resume else -2 for p in partitions(self.settings, topic, "ingest")}
        log.info("new checkpoint beside tables that hold ticks: starting %s after their last offsets %s",
                 topic, offsets)
        return json.dumps({topic: offsets})

    def process_batch(self, marked: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        from spark_jobs import transforms as T

        fault_point(FaultPoint.INGEST_TICKS_BATCH_START)
        started = time.monotonic()
        steps: dict[str, float] = {}

        def step(name: str, since: float) -> float:
            now = time.monotonic()
            steps[name] = now - since
            return now

        spark = marked.sparkSession
        tag = f"{self.app_id}:{batch_id}"
        before = self.watermarks.before(batch_id)
        watermarks = spark.createDataFrame(
            [(s, y, datetime.fromisoformat(ts)) for (s, y), ts in before.items()],
            "source string, symbol string, max_ts timestamp",
        )
        classified = T.mark_late(marked, watermarks, self.settings.late_tolerance_seconds).persist()
        try:
            feeds = (
                classified.groupBy(F.col("reason").isNull().alias("ok"), "source", "symbol")
                .agg(F.max("ts").alias("max_ts"), F.count(F.lit(1)).alias("rows"))
                .collect()
            )
            fed = [row for row in feeds if row["ok"]]
            stored = sum(row["rows"] for row in fed)
            rejected = sum(row["rows"] for row in feeds if not row["ok"])
            mark = step("classify", started)
            now = F.current_timestamp()
            if stored:
                ticks = classified.where(F.col("reason").isNull()).select(
                    *TICK_COLUMNS, F.lit(tag).alias("ingest_batch"), now.alias("ingested_at"),
                    F.to_date("ts").alias("ts_date"),
                )
                tables.spark_append(ticks, self.settings, tables.TICKS, txn=(self.app_id, batch_id))
                fault_point(FaultPoint.INGEST_TICKS_AFTER_APPEND)
                mark = step("ticks", mark)
            if rejected:
                quarantined = classified.where(F.col("reason").isNotNull()).select(
                    "reason", F.lit("ingest").alias("stage"), *RECORD_COLUMNS,
                    F.lit(tag).alias("ingest_batch"), now.alias("quarantined_at"),
                )
                tables.spark_append(quarantined, self.settings, tables.QUARANTINE, txn=(self.app_id, batch_id))
                mark = step("quarantine", mark)
        finally:
            classified.unpersist()
        fault_point(FaultPoint.INGEST_TICKS_BEFORE_WATERMARKS)
        self.watermarks.save(batch_id, advance(before, fed))
        step("watermarks", mark)
        self._report_quarantine(stored, rejected)
        log.info("ticks batch %d: %d stored, %d quarantined in %.2fs (%s)", batch_id, stored, rejected,
                 time.monotonic() - started, ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))


    def _report_quarantine(self, stored: int, rejected: int) -> None:
        total = stored + rejected
        if not total:
            return
        share = rejected / total
        spike = rejected >= self.settings.alerts_quarantine_min_records and share >= self.settings.alerts_quarantine_share
        self.reporter.state(
            "quarantine_spike", spike,
            f"{rejected:,} of {total:,} records of a batch quarantined ({share:.1%})" if spike
            else f"{share:.1%} of the last batch's records quarantined",
            details={"quarantined": rejected, "records": total},
        )


def stored_offsets(spark: SparkSession, settings: Settings) -> dict[int, int]:
    """Kafka partition -> the highest offset of the ticks topic held in ``ticks`` or
    ``quarantine`` (the ingest stage's rejects); empty when they hold none."""
    from pyspark.sql import functions as F

    newest: dict[int, int] = {}
    for name in (tables.TICKS, tables.QUARANTINE):
        frame = tables.spark_read(spark, settings, name)
        if name == tables.QUARANTINE:
            frame = frame.where((F.col("stage") == "ingest") & (F.col("kafka_topic") == settings.topic_ticks))
        for row in (frame.where(F.col("kafka_partition").isNotNull()).groupBy("kafka_partition")
                    .agg(F.max("kafka_offset").alias("offset")).collect()):
            partition = int(row["kafka_partition"])
            newest[partition] = max(newest.get(partition, -1), int(row["offset"]))
    return newest
