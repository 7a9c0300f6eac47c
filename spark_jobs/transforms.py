"""Pure Spark transforms of the ingest job: DataFrames in, DataFrames out, no IO.

The entry module (``spark_jobs.ingest``) reads Kafka, calls these, and writes Delta.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickcast.core.intervals import interval as interval_of
from tickcast.core.symbols import SYMBOL_PATTERN

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SUPPORTED_SCHEMA_VERSIONS = (1,)
REQUIRED_FIELDS = ("msg_id", "symbol", "ts", "price", "volume", "source", "produced_at")

# Quarantine reasons, in the order they are checked; the first that applies wins.
REASON_INVALID_JSON = "invalid_json"
REASON_SCHEMA_VERSION = "unsupported_schema_version"
REASON_INVALID_SYMBOL = "invalid_symbol"
REASON_INVALID_PRICE = "invalid_price"
REASON_INVALID_VOLUME = "invalid_volume"
REASON_INVALID_QUOTE = "invalid_bid_ask"
REASON_FUTURE = "ts_in_future"
REASON_LATE = "late"
REASON_DUPLICATE = "duplicate_msg_id"


def tick_json_schema():
    """Types as sent on the wire: timestamps stay strings so a bad one is seen, not nulled."""
    from pyspark.sql.types import (
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    return StructType(
        [
            StructField("schema_version", LongType()),
            StructField("msg_id", StringType()),
            StructField("symbol", StringType()),
            StructField("ts", StringType()),
            StructField("price", DoubleType()),
            StructField("volume", DoubleType()),
            StructField("bid", DoubleType()),
            StructField("ask", DoubleType()),
            StructField("source", StringType()),
            StructField("produced_at", StringType()),
        ]
    )


def _not_finite(c: Column) -> Column:
    from pyspark.sql import functions as F

    return F.isnan(c) | (F.abs(c) == F.lit(float("inf")))


RAW_BASE64_PREFIX = "base64:"


def parse_ticks(raw: DataFrame, now: Column, future_tolerance_seconds: int) -> DataFrame:
    """Kafka records -> typed ticks with a ``reason`` column (null when the tick is valid).

    ``raw`` has Kafka's columns (value, topic, partition, offset). Every input row comes
    out exactly once, so nothing is lost between here and the two sinks.
    """
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    parsed = F.from_json(
        text, tick_json_schema(), {"mode": "PERMISSIVE", "allowNonNumericNumbers": "true"}
    )
    # Bytes that are not UTF-8 would make an unreadable string column; they are kept
    # losslessly as base64 instead.
    raw_text = F.when(F.is_valid_utf8(text), text).otherwise(
        F.concat(F.lit(RAW_BASE64_PREFIX), F.base64(F.col("value")))
    )
    df = raw.select(
        raw_text.alias("raw"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        parsed.alias("j"),
        now.alias("_now"),
    )
    fields = tick_json_schema().fieldNames()
    typed = df.select(
        "raw", "kafka_topic", "kafka_partition", "kafka_offset", "_now",
        # PERMISSIVE parsing turns malformed JSON (and non-objects) into all-null fields.
        (F.col("j").isNull() | ~F.greatest(*[F.col(f"j.{f}").isNotNull() for f in fields]))
        .alias("_unparsed"),
        *[F.col(f"j.{f}").alias(f"_{f}") for f in fields],
    )
    ts = F.try_to_timestamp(F.col("_ts"))
    produced_at = F.try_to_timestamp(F.col("_produced_at"))
    typed = typed.withColumns({"ts": ts, "produced_at": produced_at})
    price, volume, bid, ask = (F.col(f"_{c}") for c in ("price", "volume", "bid", "ask"))
    ts, produced_at = F.col("ts"), F.col("produced_at")

    checks: list[tuple[Column, str]] = [
        (F.col("_unparsed"), REASON_INVALID_JSON),
        (
            F.col("_schema_version").isNull()
            | ~F.col("_schema_version").isin(*SUPPORTED_SCHEMA_VERSIONS),
            REASON_SCHEMA_VERSION,
        ),
    ]
    for field in REQUIRED_FIELDS:
        checks.append((F.col(f"_{field}").isNull(), f"missing_or_invalid:{field}"))
    checks += [
        (F.length(F.col("_msg_id")) == 0, "missing_or_invalid:msg_id"),
        (~F.col("_symbol").rlike(SYMBOL_PATTERN), REASON_INVALID_SYMBOL),
        (ts.isNull(), "invalid_timestamp:ts"),
        (produced_at.isNull(), "invalid_timestamp:produced_at"),
        (_not_finite(price) | (price <= 0), REASON_INVALID_PRICE),
        (_not_finite(volume) | (volume < 0), REASON_INVALID_VOLUME),
        (
            (bid.isNotNull() & (_not_finite(bid) | (bid <= 0)))
            | (ask.isNotNull() & (_not_finite(ask) | (ask <= 0)))
            | (bid.isNotNull() & ask.isNotNull() & (bid > ask)),
            REASON_INVALID_QUOTE,
        ),
        (ts > F.col("_now") + F.make_interval(secs=F.lit(future_tolerance_seconds)), REASON_FUTURE),
    ]
    # A flat coalesce (first failing check wins) keeps generated code small.
    reason = F.coalesce(*[F.when(F.coalesce(cond, F.lit(False)), F.lit(label)) for cond, label in checks])

    return typed.select(
        "raw", "kafka_topic", "kafka_partition", "kafka_offset",
        F.col("_msg_id").alias("msg_id"),
        F.col("_symbol").alias("symbol"),
        "ts",
        price.alias("price"),
        volume.alias("volume"),
        bid.alias("bid"),
        ask.alias("ask"),
        F.col("_source").alias("source"),
        "produced_at",
        F.col("_schema_version").cast("int").alias("schema_version"),
        # The clock "future" was judged against (the Kafka record time): later checks of the
        # same batch use it too, so a replay decides the same.
        F.col("_now").alias("received_at"),
        reason.alias("reason"),
    )


def mark_in_batch_duplicates(ticks: DataFrame) -> DataFrame:
    """Second and later copies of a msg_id inside one batch get reason duplicate_msg_id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first_seen = Window.partitionBy("msg_id").orderBy("kafka_partition", "kafka_offset")
    rank = F.row_number().over(first_seen)
    return ticks.withColumn(
        "reason",
        F.when(F.col("reason").isNull() & (rank > 1), F.lit(REASON_DUPLICATE)).otherwise(F.col("reason")),
    )


def mark_late(ticks: DataFrame, watermarks: DataFrame, tolerance_seconds: int) -> DataFrame:
    """Valid ticks older than their feed's watermark (newest ts per source and symbol,
    as of the start of the batch, minus the tolerance) get reason ``late``.

    ``watermarks`` has columns source, symbol, max_ts.
    """
    from pyspark.sql import functions as F

    joined = ticks.join(F.broadcast(watermarks), ["source", "symbol"], "left")
    cutoff = F.col("max_ts") - F.make_interval(secs=F.lit(tolerance_seconds))
    is_late = F.col("reason").isNull() & F.col("max_ts").isNotNull() & (F.col("ts") < cutoff)
    return joined.withColumn(
        "reason", F.when(is_late, F.lit(REASON_LATE)).otherwise(F.col("reason"))
    ).drop("max_ts")


def mark_known_duplicates(ticks: DataFrame, known_msg_ids: DataFrame) -> DataFrame:
    """Valid ticks whose msg_id is already stored get reason duplicate_msg_id.

    ``known_msg_ids`` has one column, msg_id.
    """
    from pyspark.sql import functions as F

    known = known_msg_ids.select("msg_id").distinct().withColumn("_known", F.lit(True))
    joined = ticks.join(known, "msg_id", "left")
    return joined.withColumn(
        "reason",
        F.when(F.col("reason").isNull() & F.col("_known"), F.lit(REASON_DUPLICATE)).otherwise(
            F.col("reason")
        ),
    ).drop("_known")


def bar_partials(ticks: DataFrame, interval: str) -> DataFrame:
    """Aggregate ticks into partial OHLCV bars per (symbol, event-time window).

    Partials from different batches combine exactly (see ``BAR_MERGE_SET``): open and
    close carry the timestamps that decide them, so arrival order never matters.
    """
    from pyspark.sql import functions as F

    window = F.window("ts", interval_of(interval).spark_duration)
    first = F.min(F.struct("ts", "msg_id", "price"))
    last = F.max(F.struct("ts", "msg_id", "price"))
    return (
        ticks.groupBy("symbol", window.alias("w"))
        .agg(
            first["price"].alias("open"),
            F.max("price").alias("high"),
            F.min("price").alias("low"),
            last["price"].alias("close"),
            F.sum("volume").alias("volume"),
            F.count(F.lit(1)).alias("trades"),
            F.min("ts").alias("open_ts"),
            F.max("ts").alias("close_ts"),
        )
        .select(
            "symbol",
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "open", "high", "low", "close", "volume", "trades", "open_ts", "close_ts",
        )
    )


# How a partial bar (s) folds into a stored bar (t).
BAR_MERGE_SET = {
    "open": "CASE WHEN s.open_ts < t.open_ts OR t.open_ts IS NULL THEN s.open ELSE t.open END",
    "high": "greatest(t.high, s.high)",
    "low": "least(t.low, s.low)",
    "close": "CASE WHEN s.close_ts >= t.close_ts OR t.close_ts IS NULL THEN s.close ELSE t.close END",
    "volume": "coalesce(t.volume, 0) + s.volume",
    "trades": "coalesce(t.trades, 0) + s.trades",
    "open_ts": "least(t.open_ts, s.open_ts)",
    "close_ts": "greatest(t.close_ts, s.close_ts)",
    "updated_at": "s.updated_at",
}


def quarantine_rows(failing: DataFrame, stage: str, batch_tag: str) -> DataFrame:
    """Bar or feature rows that failed their quality suite, as ``quarantine`` rows: the whole
    row kept as JSON in ``raw``, its bar start in ``ts``, the suite's reason."""
    from pyspark.sql import functions as F

    return failing.select(
        "reason", F.lit(stage).alias("stage"),
        F.to_json(F.struct(*[c for c in failing.columns if c != "reason"])).alias("raw"),
        F.lit(None).cast("string").alias("msg_id"), "symbol", F.col("window_start").alias("ts"),
        F.lit(None).cast("string").alias("source"), F.lit(None).cast("string").alias("kafka_topic"),
        F.lit(None).cast("int").alias("kafka_partition"), F.lit(None).cast("bigint").alias("kafka_offset"),
        F.lit(batch_tag).alias("ingest_batch"), F.current_timestamp().alias("quarantined_at"),
    )
