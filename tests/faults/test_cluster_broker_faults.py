"""The cluster profile's Kafka (three KRaft nodes, authenticated as `up` runs them; topics of
replication factor 3 and min.insync.replicas 2) under the ticks query (`tickcast stream ingest
--query ticks`, a subprocess as the platform runs it) while the feed's own producer
(``TickProducer``: acks=all, idempotent) sends ticks:

* the leader of a ticks partition SIGKILLed mid-stream: the feed's writes are still acknowledged
  and stored with that node down (two replicas in sync are enough), then the node restarted on
  its ports and log dir and caught up;
* another node SIGSTOPped for ~10 s (longer than the controller's broker session) and resumed.

Afterwards the query is the same process, never restarted, and every acknowledged tick is one
row of ``ticks`` (or quarantined with a reason): none lost, none stored twice."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.faults.conftest import Job
from tests.invariants import delta_frame
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_rows
from tickcast.catalog.topics import ensure_topics
from tickcast.core.settings import Settings
from tickcast.core.ticks import encode_tick, format_ts, make_tick
from tickcast.feeds.producer import TickProducer
from tickcast.platform.broker import ClusterProcess, node_statuses
from tickcast.platform.processes import wait_until
from tickcast.platform.supervisor import program_environment

pytestmark = pytest.mark.slow

# Two on each of the three partitions (librdkafka's partitioner: CRC32 of the key modulo 3).
SYMBOLS = ("AAA", "BBB", "DDD", "FFF", "KKK", "MMM")
# Longer than broker.session.timeout.ms (9 s): the controller fences the paused node and moves
# its leaderships, as it would for a node stalled by swap or a long GC pause.
PAUSE_SECONDS = 10


class Feed:
    """One tick per symbol per round through the platform's producer; ``ids`` in produce order."""

    def __init__(self, settings: Settings):
        self.producer = TickProducer(settings).connect()
        self.ids: list[str] = []

    def round(self) -> None:
        from datetime import UTC, datetime

        now = format_ts(datetime.now(UTC))
        for symbol in SYMBOLS:
            msg_id = f"{symbol}-{len(self.ids)}"
            self.producer.send(symbol, encode_tick(make_tick(
                msg_id=msg_id, symbol=symbol, ts=now, price=100.0 + len(self.ids) % 17 * 0.25, volume=1.0,
                source="faults", produced_at=now)))
            self.ids.append(msg_id)
        self.producer.poll(0)

    def acked(self) -> bool:
        self.producer.poll(0.1)
        assert self.producer.stats.failed == 0, self.producer.stats.summary()
        return self.producer.in_flight == 0


def _stored(settings: Settings) -> set[str]:
    rows = delta_rows(settings, tables.TICKS, ["msg_id"])
    return set() if rows is None else set(rows.column("msg_id").to_pylist())


def _topic_config(settings: Settings, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(settings.kafka_client_config("admin"))
    resource = ConfigResource("topic", topic)
    return {name: entry.value for name, entry in admin.describe_configs([resource])[resource].result(30).items()}


def _job_env(settings: Settings) -> dict[str, str]:
    """The environment supervisord would give the program, for this cluster and home."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    return {**inherited, **program_environment(settings), "TICKCAST_INGEST_TRIGGER_SECONDS": "1",
            "TICKCAST_INGEST_NICENESS": "0"}


@pytest.mark.timeout(600)
def test_the_leader_killed_and_a_node_paused_under_the_ingest(base_settings: Settings, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = base_settings.model_copy(update={
        "home": home, "topic_partitions": 3, "spark_master": "local[2]", "spark_shuffle_partitions": 2,
        "spark_driver_memory": "1g"})
    with ClusterProcess(settings, home / "kafka", nodes=3, auth=True) as cluster:
        settings = cluster.settings
        assert settings.kafka_uses_embedded_auth  # every client below logs in as its role
        ensure_topics(settings, timeout=60)
        topic = settings.topic_ticks
        assert _topic_config(settings, topic)["min.insync.replicas"] == "2"
        # One cluster: every node's storage formatted with the id kept beside them, under its own node id.
        formatted = [dict(line.split("=", 1) for line in (layout.log_dir / "meta.properties").read_text().splitlines()
                          if "=" in line) for layout in cluster.layouts.values()]
        cluster_id = (home / "kafka" / "cluster-id").read_text().strip()
        assert [(m["cluster.id"], m["node.id"]) for m in formatted] == [(cluster_id, str(i)) for i in (1, 2, 3)]
        assert cluster.under_replicated(topic) == 0 and sorted(cluster.partition_leaders(topic)) == [0, 1, 2]
        feed = Feed(settings)
        job = Job(_job_env(settings), tmp_path / "ingest.log", ("stream", "ingest", "--query", "ticks")).start()
        try:
            def stores(what: str, timeout: float = 240) -> None:
                """Feed rounds until the query stored a tick produced now (its batches go on)."""
                feed.round()
                newest = feed.ids[-1]

                def stored() -> bool:
                    assert job.alive, job.log_tail()
                    feed.round()
                    return newest in _stored(settings)

                wait_until(stored, timeout=timeout, interval=0.5, what=what, on_timeout=job.log_tail)

            stores("the ingest storing ticks", timeout=300)
            assert job.proc is not None
            pid = job.proc.pid

            # The leader of partition 0 SIGKILLed: writes acknowledged and stored without it.
            killed = cluster.leader_of(topic, 0)
            cluster.kill(killed)
            stores(f"ticks stored with node {killed} down")
            wait_until(feed.acked, timeout=120, interval=0, what=f"every tick acknowledged with node {killed} down")
            assert not cluster.alive(killed)
            leaders = cluster.partition_leaders(topic)
            assert killed not in leaders.values() and -1 not in leaders.values(), leaders
            # What `tickcast status` shows of it: out of the cluster, leading nothing.
            shown = {node.node_id: node for node in node_statuses(settings)}
            assert not shown[killed].alive and not shown[killed].leads, shown
            assert sum(len(node.leads) for node in shown.values()) == 3, shown

            # Restarted on its ports and log dir (as the supervisor would): back in every ISR.
            cluster.restart(killed)
            wait_until(lambda: cluster.under_replicated(topic) == 0, timeout=120, interval=0.5,
                       what=f"node {killed} back in sync")
            assert all(node.alive and not node.under_replicated for node in node_statuses(settings))

            # Another node (one that leads a partition now) paused past its session, then resumed.
            paused = next(node for node in cluster.partition_leaders(topic).values() if node != killed)
            cluster.pause(paused)
            try:
                deadline = time.monotonic() + PAUSE_SECONDS
                while time.monotonic() < deadline:  # the outage itself, with the feed going on
                    feed.round()
                    feed.producer.poll(0.5)
            finally:
                cluster.resume(paused)
            stores(f"ticks stored after node {paused} resumed")

            stats = feed.producer.close()
            assert (stats.failed, stats.delivered) == (0, len(feed.ids)), stats.summary()
            produced = set(feed.ids)
            wait_until(lambda: produced <= _stored(settings), timeout=120, interval=1,
                       what="every acknowledged tick stored", on_timeout=job.log_tail)

            # Recovered by itself: the same process throughout.
            assert job.alive and job.proc.pid == pid, job.log_tail()
            job.stop()
            assert job.proc.returncode == 0, job.log_tail()
        finally:
            feed.producer.close(timeout=5)
            job.stop()

        ticks = delta_frame(settings, tables.TICKS, ["msg_id", "kafka_partition", "kafka_offset"])
        quarantine = delta_frame(settings, tables.QUARANTINE, ["reason", "msg_id"])
        # None doubled: one row per tick, one per Kafka position (the idempotent producer's retries
        # across the leader changes wrote each once).
        assert ticks["msg_id"].is_unique, ticks[ticks["msg_id"].duplicated(keep=False)]
        assert not ticks.duplicated(["kafka_partition", "kafka_offset"]).any()
        # None lost: each acknowledged tick stored, none quarantined (each is well-formed and on time).
        assert set(ticks["msg_id"]) == produced
        assert quarantine.empty, quarantine.groupby("reason").size().to_dict()
        assert set(ticks["kafka_partition"]) == {0, 1, 2}
        print(f"{len(produced)} ticks; node {killed} killed, node {paused} paused {PAUSE_SECONDS}s")
