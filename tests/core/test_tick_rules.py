"""The tick and bar rules, declared once in tickcast.core (tickrules, bars) and compiled by two
engines: Spark's column expressions in the stream and numpy checks in the live scorer. These tests
hold the two engines to the same answers on the same input, Spark's being the reference (the
stream is the system of record)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs import transforms as T
from tests.live_ticks import DAY, TODAY, TOLERANCE_US, tick, us
from tickcast.core.bars import BAR_FIELDS, merge_bar
from tickcast.core.symbols import SYMBOL_PATTERN
from tickcast.core.tickrules import FIELD_TYPES, REQUIRED_FIELDS, SUPPORTED_SCHEMA_VERSIONS
from tickcast.core.ticks import tick_schema
from tickcast.scoring.live import LiveMarket, LiveTick, parse_ticks


def test_the_rules_and_the_published_message_schema_agree() -> None:
    schema = tick_schema()
    assert list(FIELD_TYPES) == list(schema["properties"])
    assert set(REQUIRED_FIELDS) | {"schema_version"} == set(schema["required"])
    assert schema["properties"]["symbol"]["pattern"] == SYMBOL_PATTERN
    assert SUPPORTED_SCHEMA_VERSIONS == (schema["properties"]["schema_version"]["const"],)


# -- what is stored ------------------------------------------------------------------------------


def _record(**changes) -> dict:
    record = {"schema_version": 1, "msg_id": "m1", "symbol": "AAPL", "ts": "2024-03-04T15:00:00.000001Z",
              "price": 180.5, "volume": 100.0, "bid": 180.4, "ask": 180.6, "source": "feed",
              "produced_at": "2024-03-04T15:00:00.1Z"}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


CASES = [
    _record(), _record(bid=None, ask=None), _record(volume=0), _record(price=3), _record(ts="2024-03-04T15:00:00+02:00"),
    _record(ts="2024-03-04 15:00:00"), _record(schema_version=2), _record(schema_version="1"), _record(msg_id=""),
    _record(msg_id=...), _record(symbol="bad symbol"), _record(symbol="X" * 33), _record(symbol=...),
    _record(ts="yesterday"), _record(ts=...), _record(produced_at="soon"), _record(price=0), _record(price=-1),
    _record(price="180.5"), _record(volume=-1), _record(bid=0), _record(bid=181.0, ask=180.0), _record(ask=-2.0),
    _record(source=...), _record(ts="2024-03-04T16:00:00Z"), _record(price=True),
    # Spark's JSON reader reads a number or a boolean in a string field as its text.
    _record(msg_id=123), _record(source=5), _record(symbol=True), _record(schema_version=1.0),
]


def test_parse_ticks_decides_what_the_stream_decides(spark) -> None:
    """The scorer's vectorised checks and the stream's Spark expressions are compiled from one rule
    table (tickcast.core.tickrules): every message gets the same verdict and the same reason."""
    received = datetime(2024, 3, 4, 15, 1, tzinfo=UTC)
    values = [orjson.dumps(r) for r in CASES] + [b"not json", b"[1, 2]", b"", b"\xff\xfe", b"{}"]
    raw = spark.createDataFrame(
        [(v, "ticks", 0, i, received.replace(tzinfo=None)) for i, v in enumerate(values)],
        "value binary, topic string, partition int, offset long, timestamp timestamp")
    reasons = {r["kafka_offset"]: r["reason"] for r in
               T.parse_ticks(raw, F.col("timestamp"), 300).select("kafka_offset", "reason").collect()}
    received_us = int(received.timestamp() * 1_000_000)
    batch, ours = parse_ticks(values, np.full(len(values), received_us), 300_000_000)
    assert dict(enumerate(ours.tolist())) == reasons
    kept = [i for i, reason in reasons.items() if reason is None]
    assert 0 < len(kept) < len(values) - 10  # both kinds are exercised
    assert len(batch) == len(kept)
    assert batch.ticks()[0] == LiveTick("AAPL", us(pd.Timestamp("2024-03-04T15:00:00.000001Z")), 180.5, 100.0,
                                        "m1", "feed")


def test_uniform_batches_are_typed_as_mixed_ones() -> None:
    """A batch whose column is all numbers, all text or all null takes a fast path: each message
    alone (every column uniform) gets the verdict and the values it gets among the odd ones."""
    received_us = int(datetime(2024, 3, 4, 15, 1, tzinfo=UTC).timestamp() * 1_000_000)
    values = [orjson.dumps(r) for r in CASES] + [b"{}"]
    mixed, reasons = parse_ticks(values, np.full(len(values), received_us), 300_000_000)
    alone = [parse_ticks([v], np.array([received_us]), 300_000_000) for v in values]
    assert [r[0] for _, r in alone] == reasons.tolist()
    assert [t for batch, _ in alone for t in batch.ticks()] == mixed.ticks()
    clean = [orjson.dumps(_record(msg_id=f"m{i}", bid=None, ask=None)) for i in range(3)]
    batch, clean_reasons = parse_ticks(clean, np.full(3, received_us), 300_000_000)
    assert clean_reasons.tolist() == [None] * 3 and len(batch) == 3


def test_duplicates_late_ticks_and_closed_bars_are_left_out() -> None:
    market = LiveMarket("1d", late_tolerance_us=TOLERANCE_US)
    at = TODAY + pd.Timedelta(hours=15)
    assert market.fold(tick("AAPL", at, 100.0, msg_id="a"))
    assert not market.fold(tick("AAPL", at, 101.0, msg_id="a"))  # duplicate msg_id
    assert market.fold(tick("AAPL", at - pd.Timedelta(seconds=299), 99.0))
    assert not market.fold(tick("AAPL", at - pd.Timedelta(seconds=301), 98.0))  # behind its feed's watermark
    # Another feed of the same symbol has its own watermark.
    assert market.fold(tick("AAPL", at - pd.Timedelta(hours=1), 97.0, source="replay"))
    assert market.fold(tick("AAPL", at + pd.Timedelta(days=1), 102.0))  # a new day: the bar rolls
    assert not market.fold(tick("AAPL", at + pd.Timedelta(hours=5), 103.0))  # late for its feed now
    # Not late for a new feed, but yesterday's bar is closed here (the stream stores it; a reload brings it).
    assert not market.fold(tick("AAPL", at + pd.Timedelta(hours=5), 103.0, msg_id="b", source="other"))
    assert market.skipped == {"duplicate": 1, "late": 2, "closed_bar": 1}
    bar = market.open["AAPL"]
    assert (bar.window_start, bar.close, bar.trades) == (us(TODAY) + DAY, 102.0, 1)
    closed = market.rolled["AAPL"][0]
    assert (closed.open, closed.high, closed.low, closed.close, closed.volume, closed.trades) == (
        97.0, 100.0, 97.0, 100.0, 30.0, 3)


def test_open_bars_equal_the_streams_bars_whatever_the_arrival_order(spark) -> None:
    rng = random.Random(5)
    ticks = [tick(symbol, TODAY + pd.Timedelta(seconds=rng.randrange(0, 86_400)), round(rng.uniform(90, 110), 2),
                   rng.choice([0.0, 1.0, 25.0]))
             for symbol in ("AAA", "BBB", "MKT") for _ in range(60)]
    rng.shuffle(ticks)
    market = LiveMarket("1d", late_tolerance_us=10 * DAY)
    for one in ticks:
        assert market.fold(one)
    ours = market.open_bars(sorted(market.open)).drop(columns=["window_end"])
    frame = spark.createDataFrame(pd.DataFrame({
        "symbol": [t.symbol for t in ticks], "ts": pd.to_datetime([t.ts for t in ticks], unit="us"),
        "msg_id": [t.msg_id for t in ticks], "price": [t.price for t in ticks], "volume": [t.volume for t in ticks],
    }))
    expected = T.bar_partials(frame, "1d").drop("window_end")
    actual = spark.createDataFrame(ours.assign(**{c: ours[c].dt.tz_localize(None) for c in
                                                  ("window_start", "open_ts", "close_ts")}))
    columns = ["symbol", "window_start", "open", "high", "low", "close", "volume", "trades", "open_ts", "close_ts"]
    assert_df_equality(actual.select(*columns), expected.select(*columns), ignore_row_order=True,
                       ignore_nullable=True, ignore_column_order=False)


def test_a_partial_merges_into_a_held_bar_as_the_streams_merge_does(spark) -> None:
    """core.bars.merge_bar (the scorer) against the stream's MERGE SET clauses, evaluated by Spark
    on the same held bars and partials, ties on the deciding times included."""
    rng = random.Random(7)
    rows = []
    for key in range(200):
        held_open_ts, held_close_ts = rng.randrange(0, 5), rng.randrange(5, 10)
        held = (rng.uniform(90, 110), rng.uniform(110, 120), rng.uniform(80, 90), rng.uniform(90, 110),
                rng.uniform(0, 50), rng.randrange(1, 9), held_open_ts, held_close_ts)
        new = (rng.uniform(90, 110), rng.uniform(110, 120), rng.uniform(80, 90), rng.uniform(90, 110),
               rng.uniform(0, 50), rng.randrange(1, 9), rng.randrange(0, 5), rng.randrange(5, 10))
        rows.append((key, *held, *new))
    names = list(BAR_FIELDS)
    columns = ["key", *[f"t_{n}" for n in names], *[f"s_{n}" for n in names]]
    frame = pd.DataFrame(rows, columns=columns)
    ours = merge_bar({n: frame[f"t_{n}"].to_numpy() for n in names}, {n: frame[f"s_{n}"].to_numpy() for n in names})

    t = spark.createDataFrame(frame[["key", *[f"t_{n}" for n in names]]]).toDF("key", *names).alias("t")
    s = spark.createDataFrame(frame[["key", *[f"s_{n}" for n in names]]]).toDF("key", *names).alias("s")
    merged = t.join(s, F.col("t.key") == F.col("s.key")).select(
        F.col("t.key").alias("key"), *[F.expr(T.BAR_MERGE_SET[n]).alias(n) for n in names]
    ).toPandas().sort_values("key").reset_index(drop=True)
    for name in names:
        np.testing.assert_array_equal(merged[name].to_numpy(), ours[name], err_msg=name)
    assert (frame["t_open_ts"] == frame["s_open_ts"]).any() and (frame["t_close_ts"] == frame["s_close_ts"]).any()
