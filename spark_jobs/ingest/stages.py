"""The stages of an ingest micro-batch, and the ``Batch`` they share.

``IngestJob.process_batch`` runs them in order: parse, classify, check the ticks, quarantine,
store the ticks, the bars of each interval, the feeds, the features of each interval, the
quality records; then it saves the feed watermarks. The pure Spark work is in
``spark_jobs.transforms`` and ``spark_jobs.features``; the stages decide and do the IO,
through ``tickcast.catalog.tables``.

Each write carries a Delta transaction id, (app id, batch id), and Delta keeps one version per
app id per table; a table written twice in a batch needs an app id per write, or the second
would be skipped as a replay of the first. So the checkpoint's app id goes with the quarantine
and ticks appends, the bar MERGEs (one table each) and the quality records;
``<app id>-quarantine-<stage>`` with each later quarantine append (failing bars, failing
features); ``<app id>-features-<interval>`` with each features MERGE.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from spark_jobs.ingest.watermarks import Watermarks, advance
from tickcast.catalog import tables
from tickcast.core.intervals import INTERVALS

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, Row, SparkSession

    from spark_jobs.ingest.job import IngestJob
    from tickcast.quality.gate import QualityOutcome

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


@dataclass
class Batch:
    """What the stages of one micro-batch share."""

    id: int
    # "<app id>:<batch id>": the ingest_batch of the rows it stores, the run id of its validations.
    tag: str
    # The micro-batch's own session: what its frames were made in.
    spark: SparkSession
    # The feed watermarks as the newest batch before this one saved them.
    watermarks: Watermarks
    # ingested_at, quarantined_at and updated_at of the rows it writes.
    now: Column
    # Event-time span of the accepted ticks and their newest Kafka timestamp (None: none accepted).
    bounds: Row | None = None
    quality_parameters: dict[str, Any] = field(default_factory=dict)
    outcomes: list[QualityOutcome] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    persisted: list[DataFrame] = field(default_factory=list)

    @classmethod
    def open(cls, spark: SparkSession, app_id: str, batch_id: int, watermarks: Watermarks) -> Batch:
        from pyspark.sql import functions as F

        return cls(batch_id, f"{app_id}:{batch_id}", spark, watermarks, F.current_timestamp())

    @property
    def has_ticks(self) -> bool:
        return self.bounds is not None and self.bounds["lo"] is not None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time what runs inside as the step ``name`` of the batch's log line."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.monotonic() - started

    def keep(self, frame: DataFrame) -> DataFrame:
        """``frame`` persisted until ``release``: later stages read it more than once."""
        self.persisted.append(frame.persist())
        return frame

    def release(self) -> None:
        while self.persisted:
            self.persisted.pop().unpersist()


@dataclass(frozen=True)
class Verdicts:
    """The batch's records sorted into what is stored and what is quarantined."""

    # Every record, with the reason it was rejected (null: accepted).
    classified: DataFrame
    # The accepted records, every column: what the bars are folded from.
    accepted: DataFrame
    # The accepted records as Delta ``ticks`` rows.
    ticks: DataFrame
    # The rejected records as ``quarantine`` rows, less the batch's tag and time.
    quarantined: DataFrame
    # Records the parser accepted and the ticks' quality suite turned away.
    gate_failed: int = 0


@dataclass(frozen=True)
class Feeds:
    """What the batch's accepted ticks did to their feeds."""

    # The feed watermarks this batch saves for the next.
    watermarks: Watermarks
    # Each touched symbol's earliest accepted tick: its bars changed from there on.
    earliest: dict[str, datetime]
    stored: int
    quarantined: int


# -- the ticks ------------------------------------------------------------------------------------


def parse(job: IngestJob, batch: Batch, raw: DataFrame) -> DataFrame:
    """Kafka records as ticks, each with the first reason it cannot be stored, if any."""
    from pyspark.sql import functions as F

    from spark_jobs import transforms as T

    return T.parse_ticks(raw, F.col("timestamp"), job.settings.future_tolerance_seconds)


def classify(job: IngestJob, batch: Batch, parsed: DataFrame) -> DataFrame:
    """Mark duplicates within the batch, late ticks and duplicates of ticks stored by other
    batches; set the batch's bounds and quality parameters."""
    from spark_jobs import transforms as T

    marked = T.mark_in_batch_duplicates(parsed)
    watermarks = batch.spark.createDataFrame(
        [(s, y, datetime.fromisoformat(ts)) for (s, y), ts in batch.watermarks.items()],
        "source string, symbol string, max_ts timestamp",
    )
    marked = batch.keep(T.mark_late(marked, watermarks, job.settings.late_tolerance_seconds))
    batch.bounds = bounds = _accepted_bounds(marked)
    batch.quality_parameters = _quality_parameters(job, bounds)
    if bounds is not None and bounds["lo"] is not None:
        marked = T.mark_known_duplicates(marked, _stored_msg_ids(job, batch, bounds))
    return batch.keep(marked)


def _accepted_bounds(marked: DataFrame) -> Row | None:
    from pyspark.sql import functions as F

    return (
        marked.where(F.col("reason").isNull())
        .agg(F.min("ts").alias("lo"), F.max("ts").alias("hi"),
             F.collect_set(F.to_date("ts")).alias("dates"),
             F.max("received_at").alias("kafka_hi"))
        .first()
    )


def _quality_parameters(job: IngestJob, bounds: Row | None) -> dict[str, Any]:
    # The bounds come from the batch's Kafka timestamps, not the clock, so a replayed batch
    # decides what its first run decided.
    kafka_hi = bounds["kafka_hi"] if bounds is not None and bounds["kafka_hi"] else datetime.now()
    return {"ts_max": kafka_hi.replace(tzinfo=UTC) + timedelta(seconds=job.settings.future_tolerance_seconds)}


def _stored_msg_ids(job: IngestJob, batch: Batch, bounds: Row) -> DataFrame:
    """The msg_ids other batches stored within the accepted ticks' span."""
    from pyspark.sql import functions as F

    return (
        tables.spark_read(batch.spark, job.settings, tables.TICKS)
        .where(F.col("ts_date").isin(bounds["dates"]))
        .where(F.col("ts").between(bounds["lo"], bounds["hi"]))
        .where(F.col("ingest_batch") != batch.tag)
        .select("msg_id")
    )


def check_ticks(job: IngestJob, batch: Batch, classified: DataFrame) -> Verdicts:
    """Sort the records; accepted ticks that fail the ticks' quality suite are quarantined
    (stage ``quality``) with the expectation they failed."""
    from pyspark.sql import functions as F

    verdicts = _sort(batch, classified)
    if not batch.has_ticks:
        return verdicts
    checked = job.gate.validate(
        verdicts.ticks, "ticks", ["msg_id"], batch.quality_parameters,
        table=tables.TICKS, layer="stream", run_id=batch.tag, engine="pandas",
    )
    batch.outcomes.append(checked)
    if not checked.rows_failed:
        return verdicts
    ticks, failing = checked.split(verdicts.ticks)
    reasons = failing.select("msg_id", F.col("reason").alias("quality_reason"))
    turned_away = classified.join(reasons, "msg_id").select(
        F.col("quality_reason").alias("reason"), F.lit("quality").alias("stage"), *RECORD_COLUMNS,
    )
    return replace(
        verdicts, ticks=ticks, gate_failed=checked.rows_failed,
        accepted=verdicts.accepted.join(reasons.select("msg_id"), "msg_id", "left_anti"),
        quarantined=verdicts.quarantined.unionByName(turned_away),
    )


def _sort(batch: Batch, classified: DataFrame) -> Verdicts:
    from pyspark.sql import functions as F

    accepted = classified.where(F.col("reason").isNull())
    return Verdicts(
        classified=classified,
        accepted=accepted,
        ticks=accepted.select(
            *TICK_COLUMNS, F.lit(batch.tag).alias("ingest_batch"), batch.now.alias("ingested_at"),
            F.to_date("ts").alias("ts_date"),
        ),
        quarantined=classified.where(F.col("reason").isNotNull()).select(
            "reason", F.lit("ingest").alias("stage"), *RECORD_COLUMNS,
        ),
    )


def quarantine(job: IngestJob, batch: Batch, verdicts: Verdicts) -> None:
    """Append the rejected records, each with its reason, to ``quarantine``."""
    from pyspark.sql import functions as F

    rows = verdicts.quarantined.withColumn("ingest_batch", F.lit(batch.tag)).withColumn("quarantined_at", batch.now)
    tables.spark_append(rows, job.settings, tables.QUARANTINE, txn=(job.app_id, batch.id))


def store_ticks(job: IngestJob, batch: Batch, verdicts: Verdicts) -> None:
    tables.spark_append(verdicts.ticks, job.settings, tables.TICKS, txn=(job.app_id, batch.id))


def quarantine_failing(job: IngestJob, batch: Batch, failing: DataFrame, stage: str) -> None:
    """Bars or feature rows that failed their suite, kept whole (as JSON) with the reason."""
    from spark_jobs.transforms import quarantine_rows

    rows = quarantine_rows(failing, stage, batch.tag)
    # Its own txn app id: the batch's first quarantine append already used (app id, batch).
    tables.spark_append(rows, job.settings, tables.QUARANTINE, txn=(f"{job.app_id}-quarantine-{stage}", batch.id))


# -- the bars -------------------------------------------------------------------------------------


def bars(job: IngestJob, batch: Batch, verdicts: Verdicts, interval: str) -> None:
    """Fold the accepted ticks into the interval's bars: the batch's partial bars, their
    quality suite (failing ones quarantined), one MERGE."""
    from spark_jobs import transforms as T

    table = tables.bars(interval)
    partials = T.bar_partials(verdicts.accepted, interval).withColumn("updated_at", batch.now).persist()
    checked = job.gate.validate(
        partials, "bars", ["symbol", "window_start"], batch.quality_parameters,
        table=table, layer="stream", run_id=batch.tag, engine="pandas",
    )
    batch.outcomes.append(checked)
    passed = partials
    if checked.rows_failed:
        passed, failing = checked.split(partials)
        quarantine_failing(job, batch, failing, table)
    _merge_bars(job, batch, passed, table)
    partials.unpersist()


def _merge_bars(job: IngestJob, batch: Batch, partials: DataFrame, table: str) -> None:
    from pyspark.sql import functions as F

    from spark_jobs.transforms import BAR_MERGE_SET

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
    for attempt in tables.commit_conflict_retrying(table):
        with attempt, idempotent_dml(job.spark, job.app_id, batch.id):
            (
                tables.spark_table(job.spark, job.settings, table).alias("t")
                .merge(partials.alias("s"), condition)
                .whenMatchedUpdate(set=BAR_MERGE_SET)
                .whenNotMatchedInsertAll()
                .execute()
            )


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


# -- the feeds ------------------------------------------------------------------------------------


def feeds(batch: Batch, verdicts: Verdicts) -> Feeds:
    """The feeds' new watermarks, the symbols touched and where, the batch's counts."""
    from pyspark.sql import functions as F

    # One pass gives the feed watermarks, the batch's counts and the bars it touched.
    groups = (
        verdicts.classified.groupBy(F.col("reason").isNull().alias("ok"), "source", "symbol")
        .agg(F.min("ts").alias("min_ts"), F.max("ts").alias("max_ts"), F.count(F.lit(1)).alias("rows"))
        .collect()
    )
    fed = [row for row in groups if row["ok"]]
    earliest: dict[str, datetime] = {}
    for row in fed:
        if row["symbol"] not in earliest or row["min_ts"] < earliest[row["symbol"]]:
            earliest[row["symbol"]] = row["min_ts"]
    # Ticks the quality gate turned away were counted as parsed-ok above.
    return Feeds(
        watermarks=advance(batch.watermarks, fed),
        earliest=earliest,
        stored=sum(row["rows"] for row in fed) - verdicts.gate_failed,
        quarantined=sum(row["rows"] for row in groups if not row["ok"]) + verdicts.gate_failed,
    )


# -- the features ---------------------------------------------------------------------------------


def features(job: IngestJob, batch: Batch, interval: str, earliest: dict[str, datetime]) -> None:
    """Recompute the features of every bar this batch changed, and of the bars after them;
    check them (failing rows quarantined), MERGE them and push them online."""
    if not earliest:
        return
    from spark_jobs import features as FX

    touched = {symbol: INTERVALS[interval].floor(ts) for symbol, ts in earliest.items()}
    history = tables.spark_read(job.spark, job.settings, tables.bars(interval))
    scope = _refresh_scope(job, history, touched)
    computed = _compute_features(job, history, scope, interval)
    rows = job.spark.createDataFrame(computed, FX.feature_schema().add("computed_at", "timestamp"))
    checked = job.gate.validate(
        rows, "features", ["symbol", "interval", "window_start"], batch.quality_parameters,
        table=tables.FEATURES, layer="stream", run_id=batch.tag, engine="pandas",
    )
    batch.outcomes.append(checked)
    good, good_frame = rows, computed
    if checked.rows_failed:
        good, failing = checked.split(rows)
        quarantine_failing(job, batch, failing, f"features_{interval}")
        good_frame = good.toPandas()
    # Each interval's MERGE is its own transaction on the same table, so each needs its
    # own txn app id: Delta skips a second commit under the same (app id, version).
    _merge_features(job, good, interval, min(scope.values()), f"{job.app_id}-features-{interval}", batch.id)
    if job.settings.feast_push_enabled and len(good_frame):
        from tickcast.catalog import featurestore

        featurestore.push_online(job.settings, good_frame)


def _refresh_scope(job: IngestJob, history: DataFrame, touched: dict[str, datetime]) -> dict[str, datetime]:
    """Per symbol, the bar from which its features change: its own earliest touched bar, or
    the index's for every symbol with a bar since (the market features)."""
    from pyspark.sql import functions as F

    from spark_jobs import features as FX

    index = job.settings.market_index_symbol
    since_index_change: list[str] = []
    if index in touched:
        since_index_change = [
            row["symbol"]
            for row in history.where(F.col("window_start") >= F.lit(touched[index]))
            .select("symbol").distinct().collect()
        ]
    return FX.refresh_scope(touched, index, since_index_change)


def _compute_features(
    job: IngestJob, history: DataFrame, scope: dict[str, datetime], interval: str
) -> pd.DataFrame:
    """The feature rows of the scope's bars, from each symbol's trailing bars, as pandas."""
    import pandas as pd
    from pyspark.sql import functions as F

    from spark_jobs import features as FX
    from tickcast.features.compute import BAR_COLUMNS

    factor = job.settings.features_lookback_factor
    scope_df = job.spark.createDataFrame(sorted(scope.items()), "symbol string, refresh_from timestamp")
    recent = history.where(
        F.col("window_start") >= F.lit(FX.lookback_start(min(scope.values()), interval, factor))
    )
    index_bars = recent.where(F.col("symbol") == job.settings.market_index_symbol).select(*BAR_COLUMNS).toPandas()
    trailing = FX.trailing_bars(recent, scope_df, interval, factor)
    # The batch's feature rows are few (one or two bars per symbol): bring them to the
    # driver once and work from that copy. The MERGE source is then a local relation,
    # which Delta neither recomputes nor materialises, and GX and Feast read pandas.
    computed = FX.feature_rows(
        trailing, interval, index_bars, job.settings.spark_shuffle_partitions, emit_from="refresh_from"
    ).toPandas()
    computed["computed_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return computed


def _merge_features(
    job: IngestJob, rows: DataFrame, interval: str, earliest: datetime, app_id: str, batch_id: int
) -> None:
    from spark_jobs import features as FX

    for attempt in tables.commit_conflict_retrying(tables.FEATURES):
        with attempt, idempotent_dml(job.spark, app_id, batch_id):
            (
                tables.spark_table(job.spark, job.settings, tables.FEATURES).alias("t")
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


# -- the record -----------------------------------------------------------------------------------


def record_quality(job: IngestJob, batch: Batch) -> None:
    """The batch's validations to ``quality_results``, in one append a replay skips; the data
    docs when they are due."""
    if batch.outcomes:
        job.gate.record(batch.spark, batch.outcomes, txn=(job.app_id, batch.id))
        job.gate.publish_docs()
