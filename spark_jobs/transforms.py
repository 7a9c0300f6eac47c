"""Pure Spark transforms of the ingest job: DataFrames in, DataFrames out, no IO.

The rules are not written here: tick validity, dedupe and lateness come from
``tickcast.core.tickrules`` and the bar fold from ``tickcast.core.bars`` (the live scorer compiles
the same tables to numpy). The entry module (``spark_jobs.ingest``) reads Kafka, calls these,
and writes Delta.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from tickcast.core.bars import BAR_FIELDS, BAR_FOLD, TIE_BREAK_COLUMN, TIME_COLUMN, BarField
from tickcast.core.intervals import interval as interval_of
from tickcast.core.tickrules import DEDUPE, FIELD_TYPES, LATENESS, TICK_RULES, TIME_FIELDS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_SPARK_TYPES = {"integer": "LongType", "number": "DoubleType", "string": "StringType", "time": "StringType"}


def tick_json_schema():
    """Types as sent on the wire (``FIELD_TYPES``): timestamps stay strings so a bad one is seen,
    not nulled."""
    from pyspark.sql import types

    return types.StructType([types.StructField(name, getattr(types, _SPARK_TYPES[kind])())
                             for name, kind in FIELD_TYPES.items()])


RAW_BASE64_PREFIX = "base64:"


class _SparkTicks:
    """``TickColumns`` as Spark columns of the typed frame ``parse_ticks`` builds: ``_<field>``
    as parsed, ``ts``/``produced_at`` as timestamps, ``_now`` the Kafka record time."""

    def __init__(self, future_tolerance_seconds: int):
        self.future_tolerance_seconds = future_tolerance_seconds

    def unparsed(self) -> Column:
        return F.col("_unparsed")

    def missing(self, field: str) -> Column:
        return F.col(f"_{field}").isNull()

    def value(self, field: str) -> Column:
        return F.col(field if field in TIME_FIELDS else f"_{field}")

    def not_finite(self, field: str) -> Column:
        column = F.col(f"_{field}")
        return F.isnan(column) | (F.abs(column) == F.lit(float("inf")))

    def empty(self, field: str) -> Column:
        return F.length(F.col(f"_{field}")) == 0

    def not_matching(self, field: str, pattern: str) -> Column:
        return ~F.col(f"_{field}").rlike(pattern)

    def not_one_of(self, field: str, values) -> Column:
        return ~F.col(f"_{field}").isin(*values)

    def unreadable_time(self, field: str) -> Column:
        return F.col(field).isNull()

    def after_received(self, field: str) -> Column:
        return F.col(field) > F.col("_now") + F.make_interval(secs=F.lit(self.future_tolerance_seconds))


def first_broken_rule(columns, rules=TICK_RULES) -> Column:
    """The reason of the first rule a row breaks, or null: one flat coalesce keeps the generated
    code small."""
    return F.coalesce(*[F.when(F.coalesce(rule.broken(columns), F.lit(False)), F.lit(rule.reason))
                        for rule in rules])


def parse_ticks(raw: DataFrame, now: Column, future_tolerance_seconds: int) -> DataFrame:
    """Kafka records -> typed ticks with a ``reason`` column (null when the tick is valid).

    ``raw`` has Kafka's columns (value, topic, partition, offset). Every input row comes
    out exactly once, so nothing is lost between here and the two sinks.
    """
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
    fields = list(FIELD_TYPES)
    typed = df.select(
        "raw", "kafka_topic", "kafka_partition", "kafka_offset", "_now",
        # PERMISSIVE parsing turns malformed JSON (and non-objects) into all-null fields.
        (F.col("j").isNull() | ~F.greatest(*[F.col(f"j.{f}").isNotNull() for f in fields]))
        .alias("_unparsed"),
        *[F.col(f"j.{f}").alias(f"_{f}") for f in fields],
    )
    typed = typed.withColumns({f: F.try_to_timestamp(F.col(f"_{f}")) for f in TIME_FIELDS})
    reason = first_broken_rule(_SparkTicks(future_tolerance_seconds))
    return typed.select(
        "raw", "kafka_topic", "kafka_partition", "kafka_offset",
        F.col("_msg_id").alias("msg_id"),
        F.col("_symbol").alias("symbol"),
        "ts",
        *[F.col(f"_{c}").alias(c) for c in ("price", "volume", "bid", "ask")],
        F.col("_source").alias("source"),
        "produced_at",
        F.col("_schema_version").cast("int").alias("schema_version"),
        # The clock "future" was judged against (the Kafka record time): later checks of the
        # same batch use it too, so a replay decides the same.
        F.col("_now").alias("received_at"),
        reason.alias("reason"),
    )


def _mark(ticks: DataFrame, condition: Column, reason: str) -> DataFrame:
    """Rows still valid that meet ``condition`` get ``reason``."""
    return ticks.withColumn(
        "reason", F.when(F.col("reason").isNull() & condition, F.lit(reason)).otherwise(F.col("reason"))
    )


# Whether a valid row is the first copy of its key: set by ``mark_first_copies``, read by
# ``mark_duplicates``.
FIRST_COPY_COLUMN = "_first_copy"


def mark_first_copies(ticks: DataFrame, memory_seconds: int) -> DataFrame:
    """``ticks`` with ``FIRST_COPY_COLUMN``: whether a valid row is the first copy of its
    ``DEDUPE.key``, among earlier micro-batches (remembered ``memory_seconds`` in the RocksDB
    state store) and then by Kafka position within its batch; null for invalid rows.

    The state lives in the JVM operator ``tickcast.spark.FirstCopy`` (``spark_jobs/jvm``): one
    lookup per key, no Python worker. On a batch (not streaming) frame it sees no earlier
    batches.
    """
    from pyspark.sql import DataFrame as SparkFrame

    spark = ticks.sparkSession
    # The state store's coordinator starts with the session's streaming query manager; a batch
    # frame would otherwise find none.
    spark.streams  # noqa: B018
    marked = spark._jvm.tickcast.spark.FirstCopy.mark(
        ticks._jdf, memory_seconds, FIRST_COPY_COLUMN, "reason", DEDUPE.key, "kafka_partition", "kafka_offset")
    return SparkFrame(marked, spark)


def mark_duplicates(ticks: DataFrame) -> DataFrame:
    """Valid rows that are not the first copy of their key (``mark_first_copies``) are
    duplicates."""
    return _mark(ticks, ~F.col(FIRST_COPY_COLUMN), DEDUPE.reason).drop(FIRST_COPY_COLUMN)


def mark_late(ticks: DataFrame, watermarks: DataFrame, tolerance_seconds: int) -> DataFrame:
    """Valid ticks older than their feed's watermark (newest ts per feed as of the start of the
    batch, minus the tolerance) are late.

    ``watermarks`` has the feed columns (source, symbol) and max_ts.
    """
    joined = ticks.join(F.broadcast(watermarks), list(LATENESS.feed), "left")
    late = F.col("max_ts").isNotNull() & LATENESS.is_late(
        F.col("ts"), F.col("max_ts"), F.make_interval(secs=F.lit(tolerance_seconds)))
    return _mark(joined, late, LATENESS.reason).drop("max_ts")


def _partial(field: BarField) -> Column:
    if field.partial in ("first", "last"):
        # The price of the earliest (latest) tick; ties go to the smaller (larger) msg_id.
        ordered = F.struct(TIME_COLUMN, TIE_BREAK_COLUMN, field.of)
        return (F.min(ordered) if field.partial == "first" else F.max(ordered))[field.of]
    if field.partial == "count":
        return F.count(F.lit(1))
    return getattr(F, field.partial)(field.of)


def bar_partials(ticks: DataFrame, interval: str) -> DataFrame:
    """Aggregate ticks into partial OHLCV bars per (symbol, event-time window), by ``BAR_FOLD``.

    Partials from different batches combine exactly (``BAR_MERGE_SET``): open and close carry
    the timestamps that decide them, so arrival order never matters.
    """
    window = F.window(TIME_COLUMN, interval_of(interval).spark_duration)
    return (
        ticks.groupBy("symbol", window.alias("w"))
        .agg(*[_partial(field).alias(field.name) for field in BAR_FOLD])
        .select("symbol", F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
                *BAR_FIELDS)
    )


def _merge_sql(field: BarField) -> str:
    t, s = f"t.{field.name}", f"s.{field.name}"
    if field.merge in ("earlier", "later"):
        op = "<" if field.merge == "earlier" else ">="
        decided = field.decided_by
        return f"CASE WHEN s.{decided} {op} t.{decided} OR t.{decided} IS NULL THEN {s} ELSE {t} END"
    if field.merge == "sum":
        return f"coalesce({t}, 0) + {s}"
    return f"{'greatest' if field.merge == 'max' else 'least'}({t}, {s})"


# How a partial bar (s) folds into a stored bar (t): the MERGE's SET clauses.
BAR_MERGE_SET = {**{field.name: _merge_sql(field) for field in BAR_FOLD}, "updated_at": "s.updated_at"}


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
