"""The duplicates' state across micro-batches (``transforms.mark_first_copies``, the JVM
operator ``FirstCopy`` on the RocksDB state store): a later batch's copy of an accepted msg_id
is a duplicate, and a replayed batch decides exactly what its first run decided."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_jobs import transforms as T
from tickcast.core import tickrules as R

pytestmark = pytest.mark.slow  # three streaming runs

NOW = datetime(2026, 11, 20, 15, 0, 0)


def _record(msg_id: str, offset: int, price: float = 10.0) -> tuple:
    tick = {"schema_version": 1, "msg_id": msg_id, "symbol": "X", "ts": "2026-11-20T14:30:00Z", "price": price,
            "volume": 1.0, "bid": None, "ask": None, "source": "s", "produced_at": "2026-11-20T14:30:00Z"}
    return json.dumps(tick).encode(), "ticks", 0, offset, NOW


def _write_batch(directory, name: str, records: list[tuple]) -> None:
    frame = pd.DataFrame(records, columns=["value", "topic", "partition", "offset", "timestamp"])
    frame["partition"] = frame["partition"].astype("int32")
    frame["timestamp"] = frame["timestamp"].astype("datetime64[us]")
    frame.to_parquet(directory / f"{name}.parquet")


def _run(spark, source_dir, checkpoint, seen: dict[int, list]) -> None:
    raw = (spark.readStream.schema("value binary, topic string, partition int, offset long, timestamp timestamp")
           .option("maxFilesPerTrigger", 1).parquet(str(source_dir)))
    parsed = T.parse_ticks(raw, F.col("timestamp"), 300)
    marked = T.mark_duplicates(T.mark_first_copies(parsed, memory_seconds=3600))

    def collect(frame, batch_id):
        seen[batch_id] = sorted((r["kafka_offset"], r["reason"]) for r in frame.collect())

    marked.writeStream.foreachBatch(collect).option("checkpointLocation", str(checkpoint)) \
        .trigger(availableNow=True).start().awaitTermination()


def test_copies_in_later_batches_are_duplicates_and_a_replay_decides_the_same(spark, tmp_path):
    source, checkpoint = tmp_path / "in", tmp_path / "checkpoint"
    source.mkdir()
    _write_batch(source, "0", [_record("a", 0), _record("b", 1, price=-1.0), _record("a", 2)])
    # "b" was invalid in batch 0, so its corrected copy is the first valid one.
    _write_batch(source, "1", [_record("a", 3), _record("b", 4), _record("c", 5)])
    first: dict[int, list] = {}
    _run(spark, source, checkpoint, first)
    assert first == {
        0: [(0, None), (1, R.REASON_INVALID_PRICE), (2, R.REASON_DUPLICATE)],
        1: [(3, R.REASON_DUPLICATE), (4, None), (5, None)],
    }

    # A crash after batch 1's writes, before its commit: the restarted query replays it.
    (checkpoint / "commits" / "1").unlink()
    (checkpoint / "commits" / ".1.crc").unlink(missing_ok=True)
    replayed: dict[int, list] = {}
    _run(spark, source, checkpoint, replayed)
    assert replayed == {1: first[1]}

    # The state the replay committed is the one the next batch reads.
    _write_batch(source, "2", [_record("c", 6), _record("d", 7)])
    after: dict[int, list] = {}
    _run(spark, source, checkpoint, after)
    assert after == {2: [(6, R.REASON_DUPLICATE), (7, None)]}
