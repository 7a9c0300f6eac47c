"""Features in Spark: the one pandas implementation, applied per bucket of symbols.

Pure transforms (DataFrames in, DataFrames out); reading and writing the tables is the
caller's job (the streaming ingest and ``spark_jobs.features_backfill``).

``feature_rows`` hands every bucket of symbols to ``tickcast.features.compute`` through
``applyInPandas``, so Spark and the scorer run literally the same code. The stream calls
it on the trailing bars of the symbols a micro-batch touched (``refresh_scope`` and
``trailing_bars``); the backfill calls it on whole histories.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tickcast.core.featureset import TRAILING_BARS
from tickcast.core.intervals import interval as interval_of
from tickcast.features.compute import BAR_COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

FEATURES_MERGE_CONDITION = (
    "t.symbol = s.symbol AND t.interval = s.interval AND t.window_start = s.window_start"
)
EPOCH = datetime(1970, 1, 1)


def feature_schema() -> StructType:
    """The Delta ``features`` columns that the computation fills (all but ``computed_at``)."""
    from pyspark.sql.types import StructType

    from tickcast.catalog.tables import FEATURES, table_defs

    full = table_defs()[FEATURES].schema()
    return StructType([field for field in full.fields if field.name != "computed_at"])


def feature_rows(
    bars: DataFrame, interval: str, index_bars: pd.DataFrame | None, buckets: int, *, emit_from: str | None = None
) -> DataFrame:
    """Feature rows for every bar in ``bars`` (any number of symbols); with ``emit_from``
    (a timestamp column, e.g. ``refresh_from``) only for bars starting at or after it.

    A symbol's bars all land in one bucket; ``index_bars`` (the market index's bars as
    pandas, small) travel with the function to every task.
    """
    from pyspark.sql import functions as F

    from tickcast.features.compute import compute_features

    schema = feature_schema()
    columns = [field.name for field in schema.fields]

    def per_bucket(frame: pd.DataFrame) -> pd.DataFrame:
        return compute_features(frame, interval, index_bars, emit_from=emit_from).loc[:, columns]

    return (
        bars.select(*BAR_COLUMNS, *([emit_from] if emit_from else []))
        .withColumn("_bucket", F.pmod(F.hash("symbol"), F.lit(max(1, buckets))))
        .groupBy("_bucket")
        .applyInPandas(per_bucket, schema)
    )


def refresh_scope(
    touched: dict[str, datetime], index_symbol: str, symbols_since_index_change: list[str]
) -> dict[str, datetime]:
    """From which bar on each symbol's features must be recomputed.

    ``touched`` maps each symbol to the earliest bar a batch changed. A changed bar changes
    the features of every later bar of its symbol; a changed index bar changes the market
    features of every symbol with a bar from then on (``symbols_since_index_change``).
    """
    scope = dict(touched)
    index_from = touched.get(index_symbol)
    if index_from is not None:
        for symbol in symbols_since_index_change:
            scope[symbol] = min(scope.get(symbol, index_from), index_from)
    return scope


def lookback_start(start: datetime, interval: str, lookback_factor: float) -> datetime:
    """How far back in time to look for a symbol's ``TRAILING_BARS`` bars before ``start``."""
    try:
        return max(start - interval_of(interval).length * int(TRAILING_BARS * lookback_factor), EPOCH)
    except OverflowError:  # a factor reaching back before year 1
        return EPOCH


def trailing_bars(bars: DataFrame, scope: DataFrame, interval: str, lookback_factor: float) -> DataFrame:
    """Each scoped symbol's bars from its ``refresh_from`` on, plus the ``TRAILING_BARS``
    bars before it (those within the lookback time span).

    ``scope`` has columns ``symbol`` and ``refresh_from``. Output: the bars columns and
    ``refresh_from``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    span_seconds = int(interval_of(interval).seconds * TRAILING_BARS * lookback_factor)
    newest_first = Window.partitionBy("symbol").orderBy(F.col("window_start").desc())
    per_symbol = Window.partitionBy("symbol")
    return (
        bars.join(F.broadcast(scope), "symbol")
        .where(F.col("window_start") >= F.col("refresh_from") - F.expr(f"INTERVAL {span_seconds} SECONDS"))
        .withColumn("_rank", F.row_number().over(newest_first))
        .withColumn(
            "_refreshed",
            F.sum((F.col("window_start") >= F.col("refresh_from")).cast("int")).over(per_symbol),
        )
        .where(F.col("_rank") <= F.col("_refreshed") + F.lit(TRAILING_BARS))
        .select(*BAR_COLUMNS, "refresh_from")
    )
