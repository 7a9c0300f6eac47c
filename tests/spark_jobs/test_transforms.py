"""The ingest job's pure transforms, on a real Spark session, compared with chispa."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs import transforms as T
from tickcast.catalog import tables
from tickcast.core import tickrules as R

NOW = datetime(2026, 11, 20, 15, 0, 0)


def _tick(msg_id: str, **overrides) -> dict:
    tick = {
        "schema_version": 1, "msg_id": msg_id, "symbol": "AAPL", "ts": "2026-11-20T14:30:00.000000Z",
        "price": 190.5, "volume": 100.0, "bid": 190.4, "ask": 190.6, "source": "test",
        "produced_at": "2026-11-20T14:30:00.100000Z",
    }
    tick.update(overrides)
    return tick


def _raw(spark, payloads: list[str | bytes]):
    rows = [
        (p if isinstance(p, bytes) else p.encode(), "ticks", 0, offset, NOW)
        for offset, p in enumerate(payloads)
    ]
    return spark.createDataFrame(rows, "value binary, topic string, partition int, offset long, timestamp timestamp")


CASES = [
    (json.dumps(_tick("ok")), None),
    ("{not json", R.REASON_INVALID_JSON),
    ("[1, 2, 3]", R.REASON_INVALID_JSON),
    ("", R.REASON_INVALID_JSON),
    (json.dumps(_tick("v9", schema_version=9)), R.REASON_SCHEMA_VERSION),
    (json.dumps({k: v for k, v in _tick("nots").items() if k != "ts"}), "missing_or_invalid:ts"),
    (json.dumps(_tick("strprice", price="abc")), "missing_or_invalid:price"),
    (json.dumps(_tick("", symbol="X")), "missing_or_invalid:msg_id"),
    (json.dumps(_tick("badsym", symbol="BRK/B")), R.REASON_INVALID_SYMBOL),
    (json.dumps(_tick("badts", ts="yesterday")), "invalid_timestamp:ts"),
    (json.dumps(_tick("neg", price=-1.0)), R.REASON_INVALID_PRICE),
    (json.dumps(_tick("zero", price=0.0)), R.REASON_INVALID_PRICE),
    (json.dumps(_tick("nan", price=float("nan"))), R.REASON_INVALID_PRICE),
    (json.dumps(_tick("inf", price=float("inf"))), R.REASON_INVALID_PRICE),
    (json.dumps(_tick("negvol", volume=-5.0)), R.REASON_INVALID_VOLUME),
    (json.dumps(_tick("crossed", bid=191.0, ask=190.0)), R.REASON_INVALID_QUOTE),
    (json.dumps(_tick("future", ts="2026-11-20T15:10:00Z")), R.REASON_FUTURE),
    (json.dumps(_tick("nearfuture", ts="2026-11-20T15:04:00Z")), None),
]


def test_parse_ticks_gives_every_bad_record_its_reason(spark):
    parsed = T.parse_ticks(_raw(spark, [p for p, _ in CASES]), F.col("timestamp"), 300)
    actual = parsed.select("kafka_offset", "reason")
    expected = spark.createDataFrame(
        [(i, reason) for i, (_, reason) in enumerate(CASES)], "kafka_offset long, reason string"
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_parse_ticks_types_a_valid_tick(spark):
    parsed = T.parse_ticks(_raw(spark, [json.dumps(_tick("ok"))]), F.col("timestamp"), 300)
    row = parsed.first()
    assert row["ts"] == datetime(2026, 11, 20, 14, 30)
    assert row["produced_at"] == datetime(2026, 11, 20, 14, 30, 0, 100000)
    assert (row["msg_id"], row["symbol"], row["price"], row["volume"]) == ("ok", "AAPL", 190.5, 100.0)
    assert row["raw"] == json.dumps(_tick("ok"))


def _ticks(spark, rows):
    return spark.createDataFrame(
        rows,
        "msg_id string, symbol string, source string, ts timestamp, price double, volume double, "
        "kafka_partition int, kafka_offset long, reason string",
    )


def test_in_batch_duplicates_keep_the_first_copy_by_kafka_position(spark):
    t = datetime(2026, 11, 20, 14, 30)
    ticks = _ticks(spark, [
        ("a", "X", "s", t, 1.0, 1.0, 0, 9, None),
        ("a", "X", "s", t, 1.0, 1.0, 0, 5, None),
        ("a", "Y", "other-feed", t, 1.0, 1.0, 1, 7, None),
        ("b", "X", "s", t, 1.0, 1.0, 1, 1, None),
        ("c", "X", "s", t, 1.0, 1.0, 1, 2, "invalid_price"),
        ("c", "X", "s", t, 1.0, 1.0, 1, 3, None),
    ])
    out = T.mark_duplicates(T.mark_first_copies(ticks, memory_seconds=60)).select("kafka_partition", "kafka_offset",
                                                                                  "reason")
    expected = spark.createDataFrame(
        # The key is the msg_id across feeds; an invalid copy is neither first nor a duplicate.
        [(0, 5, None), (0, 9, R.REASON_DUPLICATE), (1, 7, R.REASON_DUPLICATE), (1, 1, None),
         (1, 2, "invalid_price"), (1, 3, None)],
        "kafka_partition int, kafka_offset long, reason string",
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_late_is_judged_per_feed_and_symbol(spark):
    t = datetime(2026, 11, 20, 14, 30)
    ticks = _ticks(spark, [
        ("live-late", "X", "live", t - timedelta(minutes=6), 1.0, 1.0, 0, 1, None),
        ("live-ok", "X", "live", t - timedelta(minutes=4), 1.0, 1.0, 0, 2, None),
        ("other-symbol", "Y", "live", t - timedelta(days=400), 1.0, 1.0, 0, 3, None),
        ("replay-old", "X", "replay:x", t - timedelta(days=400), 1.0, 1.0, 0, 4, None),
        ("already-bad", "X", "live", t - timedelta(days=1), 1.0, 1.0, 0, 5, "invalid_price"),
    ])
    watermarks = spark.createDataFrame([("live", "X", t)], "source string, symbol string, max_ts timestamp")
    out = T.mark_late(ticks, watermarks, tolerance_seconds=300).select("msg_id", "reason")
    expected = spark.createDataFrame(
        [("live-late", "late"), ("live-ok", None), ("other-symbol", None), ("replay-old", None),
         ("already-bad", "invalid_price")],
        "msg_id string, reason string",
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_bar_partials_take_open_and_close_by_event_time_not_arrival(spark):
    base = datetime(2026, 11, 20, 14, 30)
    ticks = _ticks(spark, [
        # arrival order (offsets) deliberately differs from event time
        ("c", "X", "s", base + timedelta(seconds=50), 12.0, 3.0, 0, 1, None),
        ("a", "X", "s", base + timedelta(seconds=1), 10.0, 1.0, 0, 2, None),
        ("b", "X", "s", base + timedelta(seconds=20), 15.0, 2.0, 0, 3, None),
        ("d", "X", "s", base + timedelta(seconds=70), 9.0, 4.0, 0, 4, None),
    ])
    out = T.bar_partials(ticks, "1m").select("symbol", "window_start", "open", "high", "low", "close", "volume", "trades")
    expected = spark.createDataFrame(
        [("X", base, 10.0, 15.0, 10.0, 12.0, 6.0, 3), ("X", base + timedelta(minutes=1), 9.0, 9.0, 9.0, 9.0, 4.0, 1)],
        "symbol string, window_start timestamp, open double, high double, low double, close double, "
        "volume double, trades long",
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_partials_merged_in_any_order_equal_one_aggregation(spark, settings, split):
    """Folding partial bars with BAR_MERGE_SET gives the bar of all ticks at once."""
    from delta.tables import DeltaTable

    from tickcast.catalog.tables import ensure_tables

    ensure_tables(spark, settings, ["bars_1d"])
    base = datetime(2026, 11, 20, 14, 0)
    rows = [(f"m{i}", "X", "s", base + timedelta(minutes=7 * i), 10.0 + (i * 37 % 11), float(i + 1), 0, i, None)
            for i in range(12)]
    batches = [rows[i::split] for i in range(split)]  # interleaved: later batches hold earlier ticks
    path = tables.table_path(settings, "bars_1d")
    for batch in batches:
        partials = T.bar_partials(_ticks(spark, batch), "1d").withColumn("updated_at", F.current_timestamp())
        (
            DeltaTable.forPath(spark, path).alias("t")
            .merge(partials.alias("s"), "t.symbol = s.symbol AND t.window_start = s.window_start")
            .whenMatchedUpdate(set=T.BAR_MERGE_SET)
            .whenNotMatchedInsertAll()
            .execute()
        )
    cols = ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume", "trades"]
    actual = spark.read.format("delta").load(path).select(*cols)
    expected = T.bar_partials(_ticks(spark, rows), "1d").select(*cols)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_bytes_that_are_not_utf8_are_kept_as_base64(spark):
    import base64

    payload = b"\xff\xfe{\x80 not text"
    raw = spark.createDataFrame(
        [(payload, "ticks", 0, 0, datetime(2026, 11, 20, 15, 0))],
        "value binary, topic string, partition int, offset long, timestamp timestamp",
    )
    row = T.parse_ticks(raw, F.col("timestamp"), 300).first()
    assert row["reason"] == R.REASON_INVALID_JSON
    assert row["raw"] == T.RAW_BASE64_PREFIX + base64.b64encode(payload).decode()
