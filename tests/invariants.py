"""The pipeline's invariants, checked after a restart or an injected fault (tests/e2e,
tests/faults): every record of a topic by its position, a Delta table as pandas, the bars
as a re-fold of the stored ticks, and the stream's features as the batch backfill's."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from chispa import assert_approx_df_equality
from confluent_kafka import Consumer, TopicPartition

from tickcast.catalog import tables
from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.core.bars import BAR_FIELDS, BAR_FOLD, TIE_BREAK_COLUMN, TIME_COLUMN
from tickcast.core.featureset import FEATURE_NAMES
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS


def checkpoint_batches(directory: Path) -> list[int]:
    """The batch ids a Spark checkpoint's ``offsets`` or ``commits`` directory holds, in order."""
    try:
        return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    except FileNotFoundError:
        return []


def topic_records(bootstrap: str, topic: str) -> dict[tuple[int, int], str | None]:
    """Every record of the topic: its Kafka position -> its msg_id (None when it has none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in meta.topics[topic].partitions}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, high) in ends.items() if high > low])
        records: dict[tuple[int, int], str | None] = {}
        wanted = sum(high - low for low, high in ends.values())
        deadline = time.monotonic() + 120
        while len(records) < wanted and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1):
                if msg.error() is not None:
                    continue
                try:
                    value = json.loads(msg.value())
                except ValueError:
                    value = None
                msg_id = value.get("msg_id") if isinstance(value, dict) else None
                records[(msg.partition(), msg.offset())] = msg_id if isinstance(msg_id, str) else None
        assert len(records) == wanted, f"read {len(records)} of {wanted} records back"
        return records
    finally:
        consumer.close()


def delta_frame(settings, table: str, columns: list[str]) -> pd.DataFrame:
    """A Delta table's columns as pandas, timestamps as epoch microseconds."""
    rows = delta_rows(settings, table, columns)
    assert rows is not None, table
    for i, name in enumerate(rows.column_names):
        if pa.types.is_timestamp(rows.schema.field(name).type):
            micros = rows.column(name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            rows = rows.set_column(i, name, micros)
    return rows.to_pandas()


def refold(ticks: pd.DataFrame, interval: str) -> pd.DataFrame:
    """The bars of ``interval`` folded from all of ``ticks`` at once by ``BAR_FOLD``: per (symbol,
    window), first/last by (event time, msg_id), max, min, sum, count."""
    windowed = ticks.assign(window_start=INTERVALS[interval].floor_us(ticks[TIME_COLUMN]))
    groups = windowed.sort_values([TIME_COLUMN, TIE_BREAK_COLUMN]).groupby(["symbol", "window_start"])
    folded = {}
    for field in BAR_FOLD:
        if field.partial == "count":
            folded[field.name] = groups.size()
        else:
            folded[field.name] = getattr(groups[field.of], field.partial)()
    return pd.DataFrame(folded).reset_index()


def tied_prices(ticks: pd.DataFrame, interval: str, at: str) -> pd.Series:
    """Per (symbol, window), the prices of its ticks at its first (``at="min"``) or last
    (``"max"``) event time."""
    windowed = ticks.assign(window_start=INTERVALS[interval].floor_us(ticks[TIME_COLUMN]))
    edge = windowed.groupby(["symbol", "window_start"])[TIME_COLUMN].transform(at)
    return windowed[windowed[TIME_COLUMN] == edge].groupby(["symbol", "window_start"])["price"].agg(frozenset)


def assert_bars_are_a_refold(settings, ticks: pd.DataFrame) -> None:
    """Replay determinism: every bar table equals a batch re-fold of the stored ``ticks``.

    Open and close are the fold's picks; where several ticks share the bar's first (last) event
    time and reached the bars query in different micro-batches, the fold across batches keeps the
    earlier batch's open and takes the later batch's close (tickcast.core.bars), so any of their
    prices is the fold's answer."""
    for interval in INTERVAL_NAMES:
        table = tables.bars(interval)
        bars = delta_frame(settings, table, ["symbol", "window_start", *BAR_FIELDS]).set_index(["symbol", "window_start"])
        folded = refold(ticks, interval).set_index(["symbol", "window_start"])
        assert sorted(bars.index) == sorted(folded.index), table
        bars = bars.loc[folded.index]
        for name in ("high", "low", "trades", "open_ts", "close_ts"):
            assert (bars[name] == folded[name]).all(), (table, name, bars[bars[name] != folded[name]])
        assert bars["volume"].to_numpy() == pytest.approx(folded["volume"].to_numpy(), rel=1e-12), table
        for name, edge in (("open", "min"), ("close", "max")):
            tied = tied_prices(ticks, interval, edge).loc[folded.index]
            exact = bars[name] == folded[name]
            among_tied = pd.Series([price in prices for price, prices in zip(bars[name], tied, strict=True)],
                                   index=bars.index)
            assert (exact | among_tied).all(), (table, name, bars[~(exact | among_tied)])


FEATURE_KEYS = ["symbol", "interval", "window_start", "window_end"]


def assert_features_equal_the_backfill(spark, settings, backfill: Callable[[], Any]):
    """Stream/batch parity: the ``features`` table as the stream left it (one row per stored bar)
    equals what ``backfill`` (`tickcast features backfill`) recomputes from the stored bars, to
    1e-9. Call it once the stream stopped between batches; returns the stream's features (Spark)."""
    from deltalake import DeltaTable

    path = tables.table_path(settings, tables.FEATURES)
    stream_version = DeltaTable(path).version()
    assert delta_count(settings, tables.FEATURES) == sum(delta_count(settings, tables.bars(i)) for i in INTERVAL_NAMES)
    backfill()
    columns = [*FEATURE_KEYS, *FEATURE_NAMES, "feature_set_version"]
    streamed = spark.read.format("delta").option("versionAsOf", stream_version).load(path).select(*columns)
    batch = spark.read.format("delta").load(path).select(*columns)
    assert streamed.count() == batch.count()
    assert_approx_df_equality(streamed.orderBy(*FEATURE_KEYS), batch.orderBy(*FEATURE_KEYS), precision=1e-9,
                              ignore_nullable=True)
    return streamed


def topic_messages(bootstrap: str, topic: str, idle_polls: int = 3) -> list[dict]:
    """Every JSON message of ``topic`` (PLAINTEXT test broker), read until ``idle_polls`` empty polls."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages, idle = [], 0
    while idle < idle_polls:
        batch = consumer.consume(500, timeout=1.0)
        idle = idle + 1 if not batch else 0
        messages += [json.loads(m.value()) for m in batch if m.error() is None]
    consumer.close()
    return messages


class Events:
    """The pipeline events on a topic, read as they come."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                                  "auto.offset.reset": "earliest"})
        self.consumer.subscribe([topic])
        self.seen: list = []

    def of(self, kind: str) -> list[str]:
        """The statuses of ``kind``'s events so far, in order."""
        from tickcast.catalog.events import parse_event

        self.seen += [parse_event(m.value()) for m in self.consumer.consume(100, timeout=0.5) if m.error() is None]
        return [e.status for e in self.seen if e.kind == kind]

    def close(self) -> None:
        self.consumer.close()
