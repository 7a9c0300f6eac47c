"""The stages of a ``bars`` micro-batch (the ticks one batch of the ``ticks`` query stored),
and the ``Batch`` they share.

``BarsQuery.process_batch`` runs them in order: the feeds (the symbols touched, the checks'
bounds), the ticks' audit, the bars of each interval, the features of each interval, the
quality records. The pure Spark work is in
``spark_jobs.transforms`` and ``spark_jobs.features``; the stages decide and do the IO, through
``tickcast.catalog.tables``.

Each write carries a Delta transaction id, (app id, batch id), and Delta keeps one version per
app id per table; a table written twice in a batch needs an app id per write, or the second
would be skipped as a replay of the first. So the checkpoint's app id goes with the bar MERGEs
(one table each) and the quality records; ``<app id>-quarantine-<stage>`` with each quarantine
append (failing bars, failing features); ``<app id>-features-<interval>`` with each features
MERGE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tickcast.catalog import tables
from tickcast.core.faults import FaultPoint, fault_point
from tickcast.core.intervals import INTERVALS

log = logging.getLogger("tickcast.ingest")

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from spark_jobs.ingest.bars import BarsQuery
    from tickcast.quality.gate import QualityOutcome

@dataclass
class Batch:
    """What the stages of one micro-batch share."""

    id: int
    # "<app id>:<batch id>": the ingest_batch of the rows it writes, the run id of its validations.
    tag: str
    # The micro-batch's own session: what its frames were made in.
    spark: SparkSession
    # updated_at of the rows it writes.
    now: Column
    quality_parameters: dict[str, Any] = field(default_factory=dict)
    outcomes: list[QualityOutcome] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def open(cls, spark: SparkSession, app_id: str, batch_id: int) -> Batch:
        from pyspark.sql import functions as F

        return cls(batch_id, f"{app_id}:{batch_id}", spark, F.current_timestamp())

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time what runs inside as the step ``name`` of the batch's log line."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.monotonic() - started


@dataclass(frozen=True)
class Feeds:
    """What the batch's ticks did to their symbols."""

    # Each touched symbol's earliest tick: its bars changed from there on.
    earliest: dict[str, datetime]
    ticks: int
    # The first and last batch of the ``ticks`` query among them (what the log line reports).
    ticks_batches: tuple[int, int] | None = None


def feeds(job: BarsQuery, batch: Batch, ticks: DataFrame) -> Feeds:
    """The symbols the batch touched and from where; the bounds of its quality checks."""
    from pyspark.sql import functions as F

    stored_by = F.substring_index("ingest_batch", ":", -1).cast("long")
    rows = (
        ticks.groupBy("symbol")
        .agg(F.min("ts").alias("min_ts"), F.count(F.lit(1)).alias("rows"), F.max("ingested_at").alias("stored_at"),
             F.min(stored_by).alias("first_batch"), F.max(stored_by).alias("last_batch"))
        .collect()
    )
    # The bounds come from when the ticks were stored, not the clock, so a replayed batch
    # decides what its first run decided.
    stored_at = max((row["stored_at"] for row in rows), default=None) or datetime.now()
    batch.quality_parameters = {
        "ts_max": stored_at.replace(tzinfo=UTC) + timedelta(seconds=job.settings.future_tolerance_seconds)
    }
    firsts = [row["first_batch"] for row in rows if row["first_batch"] is not None]
    lasts = [row["last_batch"] for row in rows if row["last_batch"] is not None]
    return Feeds(earliest={row["symbol"]: row["min_ts"] for row in rows}, ticks=sum(row["rows"] for row in rows),
                 ticks_batches=(min(firsts), max(lasts)) if firsts else None)


def audit_ticks(job: BarsQuery, batch: Batch, ticks: DataFrame) -> None:
    """The ticks' quality suite over what the ``ticks`` query stored. Its compiled predicates
    admitted only rows the suite accepts; a failure here means the two disagree, and is
    recorded in ``quality_results`` and logged as an error (the rows stay stored)."""
    checked = job.gate.validate(
        ticks, "ticks", ["msg_id"], batch.quality_parameters,
        table=tables.TICKS, layer="audit", run_id=batch.tag, engine="auto",
    )
    batch.outcomes.append(checked)
    if checked.rows_failed:
        log.error("batch %s: %d stored ticks fail the ticks suite that the parse predicates passed "
                  "(the rules and expectations/ticks.json disagree)", batch.tag, checked.rows_failed)
    job.reporter.state(
        "quality_failed", bool(checked.rows_failed),
        f"{checked.rows_failed:,} stored ticks fail the ticks suite (the parse predicates and "
        "expectations/ticks.json disagree)" if checked.rows_failed else "the stored ticks pass the ticks suite",
        details={"batch": batch.tag, "rows_failed": checked.rows_failed})


def quarantine_failing(job: BarsQuery, batch: Batch, failing: DataFrame, stage: str) -> None:
    """Bars or feature rows that failed their suite, kept whole (as JSON) with the reason."""
    from spark_jobs.transforms import quarantine_rows

    rows = quarantine_rows(failing, stage, batch.tag)
    tables.spark_append(rows, job.settings, tables.QUARANTINE, txn=(f"{job.app_id}-quarantine-{stage}", batch.id))


# -- the bars -------------------------------------------------------------------------------------


def bars(job: BarsQuery, batch: Batch, ticks: DataFrame, interval: str) -> None:
    """Fold the stored ticks into the interval's bars: the batch's partial bars, their
    quality suite (failing ones quarantined), one MERGE."""
    from spark_jobs import transforms as T

    table = tables.bars(interval)
    partials = T.bar_partials(ticks, interval).withColumn("updated_at", batch.now).persist()
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
    fault_point(FaultPoint.INGEST_BARS_AFTER_MERGE)
    partials.unpersist()


def _merge_bars(job: BarsQuery, batch: Batch, partials: DataFrame, table: str) -> None:
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


# -- the features ---------------------------------------------------------------------------------


def features(job: BarsQuery, batch: Batch, interval: str, earliest: dict[str, datetime]) -> None:
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
    fault_point(FaultPoint.INGEST_FEATURES_BEFORE_PUSH)
    if job.settings.feast_push_enabled and len(good_frame):
        push_features(job, good_frame)


def push_features(job: BarsQuery, frame: pd.DataFrame) -> None:
    """The rows to the online store. One that cannot be written (Redis down) does not stop the
    stream: the rows are in Delta already, the store keeps them for its next push, and
    ``feature_push_failed`` is reported until a push goes through."""
    from tickcast.catalog import featurestore

    try:
        featurestore.push_online(job.settings, frame)
    except featurestore.OnlineStoreUnavailable as exc:
        log.error("features not pushed online: %s", exc)
        job.reporter.state("feature_push_failed", True, f"{exc}; the online features are aging",
                           severity="critical", details={"waiting": exc.waiting})
        return
    if job.reporter.firing("feature_push_failed"):
        log.info("features pushed online again")
        job.reporter.state("feature_push_failed", False, "the stream pushes features online again")


def _refresh_scope(job: BarsQuery, history: DataFrame, touched: dict[str, datetime]) -> dict[str, datetime]:
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
    job: BarsQuery, history: DataFrame, scope: dict[str, datetime], interval: str
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
    job: BarsQuery, rows: DataFrame, interval: str, earliest: datetime, app_id: str, batch_id: int
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


def record_quality(job: BarsQuery, batch: Batch) -> None:
    """The batch's validations to ``quality_results``, in one append a replay skips; the data
    docs when they are due."""
    if batch.outcomes:
        job.gate.record(batch.spark, batch.outcomes, txn=(job.app_id, batch.id))
        job.gate.publish_docs()
