"""Batch feature backfill: whole bar histories -> Delta ``features``.

The same computation as the stream (``spark_jobs.features.feature_rows``), over each
symbol's full history instead of its trailing bars. The result replaces the features of
the symbols in scope: rows are MERGEd on (symbol, interval, window_start), and rows of
those symbols whose bar no longer exists are deleted, so a re-run converges to the same
table. The stream may MERGE into ``features`` at the same time; commit conflicts are
retried. The index the market features were computed against is recorded with them
(``tickcast.catalog.featureindex``): a backfill of every symbol may change it, one of some
symbols only must match it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Symbols per applyInPandas group: enough to amortise the per-call cost, few enough that
# one group's history fits comfortably in a Python worker.
SYMBOLS_PER_BUCKET = 25


@dataclass(frozen=True)
class FeatureBackfillResult:
    interval: str
    symbols: int
    rows: int
    seconds: float
    quarantined: int = 0

    def summary(self) -> str:
        text = (
            f"features {self.interval}: {self.rows:,} row(s) for {self.symbols:,} symbol(s) "
            f"in {self.seconds:.1f}s"
        )
        if self.quarantined:
            text += f"; {self.quarantined:,} row(s) failed quality checks and went to quarantine"
        return text


def backfill_features(
    spark: SparkSession,
    settings: Settings,
    symbols: list[str] | None = None,
    intervals: tuple[str, ...] = INTERVAL_NAMES,
) -> list[FeatureBackfillResult]:
    from tickcast.catalog.tables import ensure_tables

    unknown = [i for i in intervals if i not in INTERVAL_NAMES]
    if unknown:
        raise ValueError(f"unknown interval(s) {', '.join(unknown)}; expected 1d or 1m")
    ensure_tables(spark, settings)
    return [_backfill_interval(spark, settings, symbols, interval) for interval in intervals]


def _backfill_interval(
    spark: SparkSession, settings: Settings, symbols: list[str] | None, interval: str
) -> FeatureBackfillResult:
    from pyspark.sql import functions as F

    from spark_jobs.features import feature_rows
    from tickcast.catalog import featureindex
    from tickcast.features.compute import BAR_COLUMNS

    if symbols:
        # Some symbols only: the others keep their market features, so the index must not change.
        featureindex.check(settings, interval)
    started = time.monotonic()
    bars = tables.spark_read(spark, settings, tables.bars(interval))
    index_bars = (
        bars.where(F.col("symbol") == settings.market_index_symbol).select(*BAR_COLUMNS).toPandas()
    )
    if symbols:
        bars = bars.where(F.col("symbol").isin(symbols))
    in_scope = [row["symbol"] for row in bars.select("symbol").distinct().collect()]
    if not in_scope:
        log.info("features %s: no bars%s; nothing to do", interval, f" for {', '.join(symbols)}" if symbols else "")
        return FeatureBackfillResult(interval, 0, 0, time.monotonic() - started)
    log.info(
        "features %s: computing %d symbol(s) from full history (index %s: %d bars)",
        interval, len(in_scope), settings.market_index_symbol, len(index_bars),
    )
    buckets = max(settings.spark_shuffle_partitions, -(-len(in_scope) // SYMBOLS_PER_BUCKET))
    rows = (
        feature_rows(bars, interval, index_bars if len(index_bars) else None, buckets)
        .withColumn("computed_at", F.current_timestamp())
        .persist()
    )
    try:
        from spark_jobs.backfill import check_and_quarantine

        good, quarantined = check_and_quarantine(
            spark, settings, rows, suite="features", id_columns=["symbol", "interval", "window_start"],
            table=tables.FEATURES, stage=f"features_{interval}",
            run_id=f"features-backfill:{interval}:{uuid.uuid4().hex[:8]}",
        )
        written = rows.count() - quarantined
        _replace_features(spark, settings, good, interval, symbols)
        featureindex.record(spark, settings, interval)
    finally:
        rows.unpersist()
    result = FeatureBackfillResult(interval, len(in_scope), written, time.monotonic() - started, quarantined)
    log.info(result.summary())
    return result


def _replace_features(
    spark: SparkSession, settings: Settings, rows: DataFrame, interval: str, symbols: list[str] | None
) -> None:

    from spark_jobs.features import FEATURES_MERGE_CONDITION
    from tickcast.catalog.tables import commit_conflict_retrying

    scope = f"t.interval = '{interval}'"
    if symbols:
        quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in symbols)
        scope += f" AND t.symbol IN ({quoted})"
    for attempt in commit_conflict_retrying("features"):
        with attempt:
            (
                tables.spark_table(spark, settings, tables.FEATURES).alias("t")
                .merge(rows.alias("s"), f"{FEATURES_MERGE_CONDITION} AND {scope}")
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .whenNotMatchedBySourceDelete(scope)
                .execute()
            )
