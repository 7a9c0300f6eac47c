"""Streaming ingest: Kafka ``ticks`` -> Delta ``ticks``/``quarantine`` -> bars -> features.

Exactly-once by construction:

* Kafka offsets are checkpointed by Spark; a restarted job replays at most the last,
  uncommitted micro-batch.
* Every Delta write of a batch is idempotent: appends carry ``txnAppId``/``txnVersion``
  and MERGEs the same through session confs, so a replayed batch is skipped table by table.
* What a replayed batch *decides* is the same as the first time: duplicates are judged
  against ticks stored by other batches, lateness against the feed watermarks saved by
  the previous batch, and "too far in the future" against the Kafka record timestamp.

Bars are folded from per-batch partials with an order-independent MERGE, so a history
replayed next to the live feed still lands in full; lateness is per feed (source and
symbol), so one feed's clock never makes another feed's ticks late.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("tickcast.ingest")

QUERY_NAME = "ingest"
WATERMARK_FILES_KEPT = 5


class FeedWatermarks:
    """Newest event time per (source, symbol), saved after each batch.

    Batch b reads the state saved by the newest batch before b, so a replay of b
    sees exactly what its first run saw.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._cached: tuple[int, dict[tuple[str, str], str]] | None = None

    def _files(self) -> list[tuple[int, Path]]:
        if not self.directory.exists():
            return []
        return sorted((int(p.stem), p) for p in self.directory.glob("*.json") if p.stem.isdigit())

    def before(self, batch_id: int) -> dict[tuple[str, str], str]:
        if self._cached is not None and self._cached[0] < batch_id:
            return self._cached[1]
        earlier = [(b, p) for b, p in self._files() if b < batch_id]
        if not earlier:
            return {}
        rows = json.loads(earlier[-1][1].read_text())
        return {(r["source"], r["symbol"]): r["max_ts"] for r in rows}

    def save(self, batch_id: int, state: dict[tuple[str, str], str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = [{"source": s, "symbol": y, "max_ts": ts} for (s, y), ts in state.items()]
        tmp = self.directory / f".{batch_id}.json.tmp"
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, self.directory / f"{batch_id}.json")
        self._cached = (batch_id, state)
        for _, old in self._files()[:-WATERMARK_FILES_KEPT]:
            old.unlink(missing_ok=True)


def _app_id(checkpoint: Path) -> str:
    """Identity of this checkpoint for idempotent Delta writes; a new checkpoint gets a new one."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    marker = checkpoint / "tickcast-app-id"
    if not marker.exists():
        marker.write_text(f"tickcast-ingest-{uuid.uuid4().hex[:12]}")
    return marker.read_text().strip()


@contextmanager
def idempotent_dml(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Make the MERGEs inside skip themselves if this (app, version) already committed."""
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


class IngestJob:
    def __init__(self, settings: Settings, spark: SparkSession):
        from tickcast.quality import QualityGate

        self.settings = settings
        self.spark = spark
        self.checkpoint = settings.checkpoint_dir / QUERY_NAME
        self.app_id = _app_id(self.checkpoint)
        self.watermarks = FeedWatermarks(self.checkpoint / "feed-watermarks")
        self.gate = QualityGate(settings)

    # -- IO shell -----------------------------------------------------------------

    def start(self, starting_offsets: str = "earliest"):
        from tickcast.catalog.tables import ensure_tables

        ensure_tables(self.spark, self.settings)
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

    def _append(self, df: DataFrame, table: str, batch_id: int, app_id: str | None = None) -> None:
        (
            df.write.format("delta").mode("append")
            .option("txnAppId", app_id or self.app_id)
            .option("txnVersion", batch_id)
            .save(tables.table_path(self.settings, table))
        )

    def process_batch(self, raw: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        from spark_jobs import transforms as T

        started = time.monotonic()
        steps: dict[str, float] = {}
        mark = [started]

        def step(name: str) -> None:
            now_ = time.monotonic()
            steps[name] = now_ - mark[0]
            mark[0] = now_

        spark = raw.sparkSession
        tag = f"{self.app_id}:{batch_id}"

        parsed = T.parse_ticks(raw, F.col("timestamp"), self.settings.future_tolerance_seconds)
        parsed = T.mark_in_batch_duplicates(parsed)
        before = self.watermarks.before(batch_id)
        watermark_df = spark.createDataFrame(
            [(s, y, datetime.fromisoformat(ts)) for (s, y), ts in before.items()],
            "source string, symbol string, max_ts timestamp",
        )
        parsed = T.mark_late(parsed, watermark_df, self.settings.late_tolerance_seconds)
        parsed = parsed.persist()

        bounds = (
            parsed.where(F.col("reason").isNull())
            .agg(F.min("ts").alias("lo"), F.max("ts").alias("hi"),
                 F.collect_set(F.to_date("ts")).alias("dates"),
                 F.max("received_at").alias("kafka_hi"))
            .first()
        )
        step("parse")
        classified = parsed
        if bounds is not None and bounds["lo"] is not None:
            stored = (
                spark.read.format("delta").load(tables.table_path(self.settings, "ticks"))
                .where(F.col("ts_date").isin(bounds["dates"]))
                .where(F.col("ts").between(bounds["lo"], bounds["hi"]))
                .where(F.col("ingest_batch") != tag)
                .select("msg_id")
            )
            classified = T.mark_known_duplicates(parsed, stored)
        classified = classified.persist()

        now = F.current_timestamp()
        quarantine_columns = (
            "reason", "stage", "raw", "msg_id", "symbol", "ts", "source",
            "kafka_topic", "kafka_partition", "kafka_offset",
        )
        quarantined = classified.where(F.col("reason").isNotNull()).select(
            *quarantine_columns[:1], F.lit("ingest").alias("stage"), *quarantine_columns[2:],
        )
        accepted = classified.where(F.col("reason").isNull())
        ticks = accepted.select(
            "msg_id", "symbol", "ts", "price", "volume", "bid", "ask", "source", "produced_at",
            "schema_version", "kafka_partition", "kafka_offset",
            F.lit(tag).alias("ingest_batch"), now.alias("ingested_at"),
            F.to_date("ts").alias("ts_date"),
        )
        # Quality bounds come from the batch's Kafka timestamps, not the clock, so a
        # replayed batch decides what its first run decided.
        kafka_hi = bounds["kafka_hi"] if bounds is not None and bounds["kafka_hi"] else datetime.now()
        quality_parameters = {
            "ts_max": kafka_hi.replace(tzinfo=UTC) + timedelta(seconds=self.settings.future_tolerance_seconds)
        }
        outcomes = []
        if bounds is not None and bounds["lo"] is not None:
            checked = self.gate.validate(
                ticks, "ticks", ["msg_id"], quality_parameters,
                table="ticks", layer="stream", run_id=tag, engine="pandas",
            )
            outcomes.append(checked)
            if checked.rows_failed:
                ticks, failing = checked.split(ticks)
                reasons = failing.select("msg_id", F.col("reason").alias("quality_reason"))
                accepted = accepted.join(reasons.select("msg_id"), "msg_id", "left_anti")
                quarantined = quarantined.unionByName(
                    classified.join(reasons, "msg_id").select(
                        F.col("quality_reason").alias("reason"), F.lit("quality").alias("stage"),
                        *quarantine_columns[2:],
                    )
                )
        self._append(
            quarantined.withColumn("ingest_batch", F.lit(tag)).withColumn("quarantined_at", now),
            "quarantine", batch_id,
        )
        step("quarantine")
        self._append(ticks, "ticks", batch_id)
        step("ticks")

        for interval in INTERVAL_NAMES:
            partials = T.bar_partials(accepted, interval).withColumn("updated_at", now).persist()
            checked = self.gate.validate(
                partials, "bars", ["symbol", "window_start"], quality_parameters,
                table=f"bars_{interval}", layer="stream", run_id=tag, engine="pandas",
            )
            outcomes.append(checked)
            if checked.rows_failed:
                partials, failing = checked.split(partials)
                self._quarantine_rows(failing, f"bars_{interval}", tag, batch_id)
            self._merge_bars(partials, f"bars_{interval}", batch_id)
            partials.unpersist()
            step(f"bars_{interval}")

        # One pass gives the feed watermarks, the batch's counts and the bars it touched.
        groups = (
            classified.groupBy(F.col("reason").isNull().alias("ok"), "source", "symbol")
            .agg(F.min("ts").alias("min_ts"), F.max("ts").alias("max_ts"), F.count(F.lit(1)).alias("rows"))
            .collect()
        )
        feed_maxima = [row for row in groups if row["ok"]]
        # Ticks the quality gate turned away were counted as parsed-ok above.
        gate_failed = sum(o.rows_failed for o in outcomes if o.table == "ticks")
        ok = sum(row["rows"] for row in feed_maxima) - gate_failed
        bad = sum(row["rows"] for row in groups if not row["ok"]) + gate_failed
        state = dict(before)
        for row in feed_maxima:
            key = (row["source"], row["symbol"])
            new = row["max_ts"].replace(tzinfo=UTC).isoformat()
            if key not in state or datetime.fromisoformat(state[key]) < datetime.fromisoformat(new):
                state[key] = new
        touched = sorted({row["symbol"] for row in feed_maxima})
        earliest: dict[str, datetime] = {}
        for row in feed_maxima:
            if row["symbol"] not in earliest or row["min_ts"] < earliest[row["symbol"]]:
                earliest[row["symbol"]] = row["min_ts"]
        for interval in INTERVAL_NAMES:
            outcomes += self._refresh_features(
                interval, {s: INTERVALS[interval].floor(ts) for s, ts in earliest.items()},
                batch_id, quality_parameters,
            )
            step(f"features_{interval}")
        if outcomes:
            self.gate.record(spark, outcomes, txn=(self.app_id, batch_id))
            self.gate.publish_docs()
        step("quality")
        self.watermarks.save(batch_id, state)
        step("watermarks")

        classified.unpersist()
        parsed.unpersist()
        log.info(
            "batch %d: %d ticks stored, %d quarantined, %d symbols updated in %.2fs (%s)",
            batch_id, ok, bad, len(touched), time.monotonic() - started,
            ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()),
        )

    def _merge_bars(self, partials: DataFrame, table: str, batch_id: int) -> None:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        from spark_jobs.transforms import BAR_MERGE_SET
        from tickcast.catalog.tables import commit_conflict_retrying

        bounds = partials.agg(F.min("window_start").alias("lo")).first()
        if bounds is None or bounds["lo"] is None:
            return
        # The range on the target lets Delta skip files of bars this batch cannot touch.
        condition = (
            f"t.symbol = s.symbol AND t.window_start = s.window_start "
            f"AND t.window_start >= timestamp'{bounds['lo'].isoformat(sep=' ')}'"
        )
        # A backfill may MERGE into the same table; the loser of a commit race retries,
        # and the txn marker makes a retry after a commit that did land a no-op.
        for attempt in commit_conflict_retrying(table):
            with attempt, idempotent_dml(self.spark, self.app_id, batch_id):
                (
                    DeltaTable.forPath(self.spark, tables.table_path(self.settings, table)).alias("t")
                    .merge(partials.alias("s"), condition)
                    .whenMatchedUpdate(set=BAR_MERGE_SET)
                    .whenNotMatchedInsertAll()
                    .execute()
                )

    def _quarantine_rows(self, failing: DataFrame, stage: str, tag: str, batch_id: int) -> None:
        """Bars or feature rows that failed their suite, kept whole (as JSON) with the reason."""
        from spark_jobs.transforms import quarantine_rows

        rows = quarantine_rows(failing, stage, tag)
        # Its own txn app id: the batch's first quarantine append already used (app id, batch).
        self._append(rows, "quarantine", batch_id, app_id=f"{self.app_id}-quarantine-{stage}")

    def _refresh_features(
        self, interval: str, touched: dict[str, datetime], batch_id: int, quality_parameters: dict
    ) -> list:
        """Recompute the features of every bar this batch changed, and of the bars after them;
        check them, store them and push them online. Returns the quality outcomes."""
        if not touched:
            return []
        import pandas as pd
        from pyspark.sql import functions as F

        from spark_jobs import features as FX
        from tickcast.features.compute import BAR_COLUMNS

        index = self.settings.market_index_symbol
        factor = self.settings.features_lookback_factor
        bars = self.spark.read.format("delta").load(tables.table_path(self.settings, tables.bars(interval)))
        since_index_change: list[str] = []
        if index in touched:
            since_index_change = [
                row["symbol"]
                for row in bars.where(F.col("window_start") >= F.lit(touched[index]))
                .select("symbol").distinct().collect()
            ]
        scope = FX.refresh_scope(touched, index, since_index_change)
        scope_df = self.spark.createDataFrame(
            sorted(scope.items()), "symbol string, refresh_from timestamp"
        )
        recent = bars.where(
            F.col("window_start") >= F.lit(FX.lookback_start(min(scope.values()), interval, factor))
        )
        index_bars = recent.where(F.col("symbol") == index).select(*BAR_COLUMNS).toPandas()
        history = FX.trailing_bars(recent, scope_df, interval, factor)
        # The batch's feature rows are few (one or two bars per symbol): bring them to the
        # driver once and work from that copy. The MERGE source is then a local relation,
        # which Delta neither recomputes nor materialises, and GX and Feast read pandas.
        computed = FX.feature_rows(
            history, interval, index_bars, self.settings.spark_shuffle_partitions, emit_from="refresh_from"
        ).toPandas()
        computed["computed_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
        rows = self.spark.createDataFrame(computed, FX.feature_schema().add("computed_at", "timestamp"))
        checked = self.gate.validate(
            rows, "features", ["symbol", "interval", "window_start"], quality_parameters,
            table="features", layer="stream", run_id=f"{self.app_id}:{batch_id}", engine="pandas",
        )
        good, good_frame = rows, computed
        if checked.rows_failed:
            good, failing = checked.split(rows)
            self._quarantine_rows(failing, f"features_{interval}", f"{self.app_id}:{batch_id}", batch_id)
            good_frame = good.toPandas()
        # Each interval's MERGE is its own transaction on the same table, so each needs its
        # own txn app id: Delta skips a second commit under the same (app id, version).
        self._merge_features(
            good, interval, min(scope.values()), f"{self.app_id}-features-{interval}", batch_id
        )
        if self.settings.feast_push_enabled and len(good_frame):
            from tickcast.catalog import featurestore

            featurestore.push_online(self.settings, good_frame)
        return [checked]

    def _merge_features(
        self, rows: DataFrame, interval: str, earliest: datetime, app_id: str, batch_id: int
    ) -> None:
        from delta.tables import DeltaTable

        from spark_jobs import features as FX
        from tickcast.catalog.tables import commit_conflict_retrying

        for attempt in commit_conflict_retrying("features"):
            with attempt, idempotent_dml(self.spark, app_id, batch_id):
                (
                    DeltaTable.forPath(self.spark, tables.table_path(self.settings, "features")).alias("t")
                    .merge(
                        rows.alias("s"),
                        # Partition and time bounds let Delta skip the files this batch cannot touch.
                        f"{FX.FEATURES_MERGE_CONDITION} AND t.interval = '{interval}' "
                        f"AND t.window_start >= timestamp'{earliest.isoformat(sep=' ')}'",
                    )
                    .whenMatchedUpdateAll()
                    .whenNotMatchedInsertAll()
                    .execute()
                )


class ProgressFile:
    """Keeps $TICKCAST_HOME/run/streaming-progress.json current for `tickcast status`."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._latest: dict[str, dict] = {}

    def record(self, name: str, progress_json: str) -> None:
        self._write(name, json.loads(progress_json))

    def mark_alive(self, name: str, query_id: str) -> None:
        """Before the first batch and while idle: show the query is up, keep its last progress."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            entry = dict(self._latest.get(name) or {"name": name, "id": query_id, "batchId": -1, "sources": []})
        entry["timestamp"] = now
        self._write(name, entry)

    def _write(self, name: str, progress: dict) -> None:
        with self._lock:
            self._latest[name] = progress
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._latest))
            os.replace(tmp, self.path)


def _progress_listener(progress: ProgressFile):
    from pyspark.sql.streaming import StreamingQueryListener

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event):
            log.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            progress.record(event.progress.name or QUERY_NAME, event.progress.json)

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception)

    return Listener()


def run(settings: Settings, starting_offsets: str = "earliest", stop_after_seconds: float | None = None) -> None:
    """Run the ingest query until SIGTERM/SIGINT (or ``stop_after_seconds``)."""
    from spark_jobs.session import build_spark

    if settings.ingest_niceness:
        os.nice(settings.ingest_niceness)  # before the JVM starts, which inherits it
    spark = build_spark(settings, "tickcast-ingest")
    from tickcast.platform.status import progress_path

    spark.streams.addListener(_progress_listener(ProgressFile(progress_path(settings))))
    job = IngestJob(settings, spark)
    query = job.start(starting_offsets)
    log.info(
        "ingest running: kafka %s topic %s -> %s (checkpoint %s)",
        settings.kafka_bootstrap_servers, settings.topic_ticks, tables.delta_dir(settings), job.checkpoint,
    )

    stopping = threading.Event()

    def _request_stop(signum, _frame):
        log.info("signal %s: stopping after the current batch", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
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


def _stop_between_batches(query, patience_seconds: float = 300.0) -> None:
    """Let the micro-batch in flight finish before stopping: ``query.stop()`` interrupts it.

    An interrupted batch is not lost (it is replayed, exactly once, on the next start), but
    stopping between batches leaves the tables complete up to the last offset read.
    """
    deadline = time.monotonic() + patience_seconds
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
