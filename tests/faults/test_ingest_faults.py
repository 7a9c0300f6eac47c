"""`tickcast stream ingest` (both queries in one process) SIGKILLed at each of the ingest's
fault points in turn, restarted after each kill, then once without a fault: every record of the
topic is one row of ``ticks`` or ``quarantine`` (by Kafka position; a duplicate's copy the only
msg_id in both), and the bars of each interval are a re-fold of the stored ticks.

One chain of kills rather than a test per point: each point costs two Spark starts otherwise
(about a minute on a busy 2-core machine), and a chain is the "repeated kills" case as well.
Each kill is checked to have happened at its point (its log line, SIGKILL), each restart
replays what the kill left behind."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from confluent_kafka import Producer

from tests.invariants import assert_bars_are_a_refold, delta_frame, topic_records
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.core.faults import FaultPoint
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.platform.processes import wait_until

pytestmark = pytest.mark.slow

INGEST_POINTS = [p for p in FaultPoint if p.value.startswith("ingest.")]
SYMBOLS = ("IA", "IB", "IC")
TICKS_PER_SYMBOL = 100
ENV = {
    # Small batches, so each run (killed at its first pass of a point) leaves work for the next.
    "TICKCAST_INGEST_MAX_OFFSETS_PER_TRIGGER": "150", "TICKCAST_INGEST_TRIGGER_SECONDS": "1",
    "TICKCAST_BARS_TRIGGER_SECONDS": "1",
    # Feast is not what the points test (features.before_push stands before the push either way),
    # and importing it costs each start seconds.
    "TICKCAST_FEAST_PUSH_ENABLED": "false",
    "TICKCAST_INGEST_NICENESS": "0", "TICKCAST_BARS_NICENESS": "0",
}


def produce(bootstrap: str, topic: str) -> int:
    """A tiny market, over the last minutes (in order per symbol, none late), with a copy of
    every 25th tick and a malformed record every 50: the records produced."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    start = datetime.now(UTC) - timedelta(minutes=4)
    sent = 0
    for i in range(TICKS_PER_SYMBOL):
        at = (start + timedelta(seconds=2 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for k, symbol in enumerate(SYMBOLS):
            value = json.dumps({"schema_version": 1, "msg_id": f"{symbol}-{i}", "symbol": symbol, "ts": at,
                                "price": 50.0 + k + (i * 7) % 11 * 0.25, "volume": float(1 + i % 4), "bid": None,
                                "ask": None, "source": "faults", "produced_at": at}).encode()
            copies = 2 if i % 25 == 24 else 1
            for _ in range(copies):
                producer.produce(topic, key=symbol.encode(), value=value)
            sent += copies
        if i % 50 == 49:
            producer.produce(topic, key=b"IA", value=b'{"msg_id": "broken-%d", ' % i)
            sent += 1
    assert producer.flush(30) == 0
    return sent


@pytest.mark.timeout(1500)
def test_ingest_killed_at_each_point_in_turn_stays_exactly_once(fault_home):
    home = fault_home(partitions=2)
    settings = home.settings
    produced = produce(home.bootstrap, home.topics["ticks"])
    for point in INGEST_POINTS:
        job = home.job("stream", "ingest", log_name="ingest", fault=f"{point.value}:kill", **ENV)
        code = job.wait_dead(600, f"the ingest to die at {point.value}")
        assert code == -signal.SIGKILL, job.log_tail()
        assert f"fault injected at {point.value}" in job.log_since_start()
    job = home.job("stream", "ingest", log_name="ingest", **ENV)

    def caught_up() -> bool:
        assert job.alive, job.log_tail()
        stored = delta_count(settings, tables.TICKS)
        bars = [delta_rows(settings, tables.bars(i), ["trades"]) for i in INTERVAL_NAMES]
        return (stored + delta_count(settings, tables.QUARANTINE) >= produced
                and all(b is not None and b.column("trades").to_pandas().sum() >= stored for b in bars))

    wait_until(caught_up, timeout=600, interval=1, what=f"all {produced} records stored or quarantined, and in bars",
               on_timeout=job.log_tail)
    job.stop()

    # Exactly once by Kafka position; by msg_id, only a duplicate's copy is in both tables.
    records = topic_records(home.bootstrap, home.topics["ticks"])
    assert len(records) == produced
    ticks = delta_frame(settings, tables.TICKS,
                        ["msg_id", "symbol", "ts", "price", "volume", "kafka_partition", "kafka_offset"])
    quarantine = delta_frame(settings, tables.QUARANTINE,
                             ["reason", "stage", "msg_id", "kafka_partition", "kafka_offset"])
    positions = pd.concat([ticks[["kafka_partition", "kafka_offset"]], quarantine[["kafka_partition", "kafka_offset"]]])
    assert not positions.duplicated().any(), positions[positions.duplicated(keep=False)]
    assert set(map(tuple, positions.to_numpy().tolist())) == set(records)
    assert ticks["msg_id"].is_unique
    assert len(ticks) == len(SYMBOLS) * TICKS_PER_SYMBOL
    assert quarantine["reason"].value_counts().to_dict() == {
        "duplicate_msg_id": len(SYMBOLS) * (TICKS_PER_SYMBOL // 25), "invalid_json": TICKS_PER_SYMBOL // 50}
    assert set(quarantine.loc[quarantine["reason"] == "duplicate_msg_id", "msg_id"]) <= set(ticks["msg_id"])

    # The bars are a re-fold of the stored ticks.
    assert_bars_are_a_refold(settings, ticks)
