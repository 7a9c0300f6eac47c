"""A Spark worker lost mid-batch: the ingest ``ticks`` query (`tickcast stream ingest --query
ticks`, as the platform runs it) on a standalone cluster of two one-core workers, the application
allowed one core (``spark.cores.max``), so its only executor runs on one worker and the other
stands idle. That worker is SIGKILLed with everything it started (its executor and the executor's
Python: a lost machine) while a micro-batch is in flight (planned in the checkpoint, not
committed). Without any manual step the master gives the application an executor on the other
worker, the lost tasks run again there, the batch commits, and the query drains the topic:
every record is one row of ``ticks`` or ``quarantine``, each good tick stored once, each copy
and each malformed record quarantined with its reason."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.faults.conftest import FaultHome
from tests.invariants import delta_frame, topic_records
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_count
from tickcast.platform.processes import wait_until
from tickcast.platform.spark_cluster import StandaloneCluster

pytestmark = pytest.mark.slow

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
GOOD = 600
# Three batches: the first commits on the cluster, the second is caught in flight, the third
# runs after the recovery (a batch costs its Delta commits more than its records).
MAX_OFFSETS_PER_TRIGGER = 250


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def produce(bootstrap: str, topic: str) -> dict[str, str | None]:
    """Good ticks, every 20th followed by a copy of itself and every 100th by a malformed
    record; returns each msg_id's expected quarantine reason (None: stored)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    errors: list[str] = []
    expected: dict[str, str | None] = {}

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    for i in range(GOOD):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        now = datetime.now(UTC)
        tick = {"schema_version": 1, "msg_id": f"w-{i}", "symbol": symbol, "ts": _iso(now),
                "price": 100.0 + (i % 13) * 0.5, "volume": float(1 + i % 5), "bid": None, "ask": None,
                "source": "worker-fault", "produced_at": _iso(now)}
        value = json.dumps(tick).encode()
        producer.produce(topic, key=symbol.encode(), value=value, on_delivery=delivered)
        expected[tick["msg_id"]] = None
        if i % 20 == 0:
            producer.produce(topic, key=symbol.encode(), value=value, on_delivery=delivered)
        if i % 100 == 0:
            bad = {**tick, "msg_id": f"w-bad-{i}", "price": -1.0}
            producer.produce(topic, key=symbol.encode(), value=json.dumps(bad).encode(), on_delivery=delivered)
            expected[bad["msg_id"]] = "invalid_price"
    assert producer.flush(60) == 0
    assert not errors, errors
    return expected


def _batch_ids(directory: Path) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    except FileNotFoundError:
        return []


@pytest.fixture
def cluster(tmp_path: Path):
    with StandaloneCluster(tmp_path / "spark", workers=2, cores=1, memory="1g") as running:
        yield running


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_batch_loses_no_tick_and_stores_none_twice(fault_home, cluster, tmp_path):
    home: FaultHome = fault_home(partitions=2)
    settings = home.settings
    topic = home.topics["ticks"]
    expected = produce(home.bootstrap, topic)
    records = topic_records(home.bootstrap, topic)
    job = home.job("stream", "ingest", "--query", "ticks", log_name="ingest-ticks",
                   TICKCAST_SPARK_MASTER=cluster.url, TICKCAST_SPARK_CORES_MAX="1",
                   TICKCAST_SPARK_EXECUTOR_MEMORY="512m",
                   TICKCAST_INGEST_MAX_OFFSETS_PER_TRIGGER=str(MAX_OFFSETS_PER_TRIGGER),
                   TICKCAST_INGEST_TRIGGER_SECONDS="1", TICKCAST_INGEST_NICENESS="0")
    checkpoint = settings.checkpoint_dir / "ticks" / "spark"

    def executor_worker() -> int | None:
        hosts = [i for i in (1, 2) if cluster.worker_executors(i)]
        return hosts[0] if len(hosts) == 1 else None

    def in_flight() -> int | None:
        planned, committed = _batch_ids(checkpoint / "offsets"), _batch_ids(checkpoint / "commits")
        # After a first batch committed on the cluster: its executor is up and has done a batch's work.
        if committed and planned and planned[-1] > committed[-1]:
            return planned[-1]
        return None

    def diagnostics() -> str:
        return f"{job.log_tail()}\n{cluster.log_tail()}"

    wait_until(lambda: job.alive and in_flight() is not None and executor_worker() is not None,
               timeout=300, interval=0.1, what="a micro-batch in flight on the cluster", on_timeout=diagnostics)
    lost = executor_worker()
    batch = in_flight()
    assert lost is not None and batch is not None
    cluster.kill_worker(lost)
    survivor = 3 - lost
    print(f"worker {lost} killed with batch {batch} in flight")

    # No step of ours from here: the master moves the application to the other worker.
    wait_until(lambda: bool(cluster.worker_executors(survivor)), timeout=120, interval=0.5,
               what=f"an executor on worker {survivor}", on_timeout=diagnostics)
    wait_until(lambda: delta_count(settings, tables.TICKS) + delta_count(settings, tables.QUARANTINE) >= len(records),
               timeout=300, interval=1, what=f"all {len(records)} records stored or quarantined",
               on_timeout=diagnostics)
    assert job.alive, diagnostics()
    assert batch in _batch_ids(checkpoint / "commits"), diagnostics()
    job.stop()
    assert job.proc is not None and job.proc.returncode == 0, job.log_tail()
    driver_log = job.log_path.read_text(errors="replace")
    assert "Lost executor" in driver_log or "ExecutorLostFailure" in driver_log, diagnostics()
    status = cluster.status()
    assert [w.state for w in status.workers if w.webui == cluster.layout.worker_webui_url(lost)] == ["DEAD"]

    # Exactly once, by Kafka position: every record is one row of ticks or of quarantine.
    ticks = delta_frame(settings, tables.TICKS, ["msg_id", "kafka_partition", "kafka_offset"])
    quarantine = delta_frame(settings, tables.QUARANTINE, ["reason", "msg_id", "kafka_partition", "kafka_offset"])
    positions = [*zip(ticks["kafka_partition"], ticks["kafka_offset"], strict=True),
                 *zip(quarantine["kafka_partition"], quarantine["kafka_offset"], strict=True)]
    assert len(positions) == len(set(positions))
    assert set(positions) == set(records)
    # By msg_id: each good tick stored once, each copy and each malformed record quarantined with its reason.
    assert ticks["msg_id"].is_unique
    assert set(ticks["msg_id"]) == {msg_id for msg_id, reason in expected.items() if reason is None}
    reasons = quarantine.groupby("reason")["msg_id"].apply(set).to_dict()
    assert reasons == {
        "duplicate_msg_id": {f"w-{i}" for i in range(0, GOOD, 20)},
        "invalid_price": {msg_id for msg_id, reason in expected.items() if reason == "invalid_price"},
    }
