"""The cluster profile as `make up` runs it (`TICKCAST_PROFILE=cluster tickcast up`, Airflow off),
on free ports, with the demo feed on, under the faults of issue 19, one after another:

1. the leader of a ``ticks`` partition SIGKILLed mid-stream (supervisord starts it again);
2. another Kafka node SIGSTOPped for longer than its controller session, then resumed;
3. the Spark worker running the ingest's executor SIGKILLed with everything it started while a
   micro-batch is in flight (a lost machine; supervisord starts it again, and the master gives
   the application an executor where there are cores);
4. PostgreSQL restarted (MLflow's, the alert engine's and the API keys' store).

Meanwhile our own producer (the feeds' ``TickProducer``: acks=all, idempotent) sends ticks of
symbols of its own and keeps what was acknowledged, and a reader asks the API (two workers on
one port) for a prediction with a key: every answer is a 200, or a 503 that says why, never
another status. Afterwards, with no step of ours: every acknowledged tick is one row of
``ticks`` (none lost, none doubled, none quarantined), the batch caught in flight committed,
the ingest is the same process throughout and the alert engine too (it waits for its store),
every program runs, both streaming queries make batches again, and the API answers 200.

One platform for the module: `up` on this profile takes minutes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from unittest import mock

import httpx
import pytest

from tests.e2e.listeners import is_loopback, platform_listeners
from tests.invariants import checkpoint_batches, delta_frame
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_rows
from tickcast.core.settings import Settings
from tickcast.core.ticks import encode_tick, format_ts, make_tick
from tickcast.feeds.producer import TickProducer
from tickcast.platform import spark_cluster
from tickcast.platform.broker import cluster_layouts, node_statuses, program_layout, program_names
from tickcast.platform.processes import TICKCAST, free_platform_ports, wait_until
from tickcast.platform.supervisor import Supervisor

# `cluster`: make test runs it after the rest, alone, since the profile takes most of the machine.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster]

# Our producer's symbols (the demo feed's are S0001..): only these ticks are tracked.
SYMBOLS = ("XAAA", "XBBB", "XCCC", "XDDD", "XEEE", "XFFF")
# Longer than broker.session.timeout.ms (9 s): the controller fences the paused node and moves
# its leaderships, as it would for a node stalled by swap or a long GC pause.
PAUSE_SECONDS = 10
# The Spark application of the `ingest` program (the ticks query), as spark_jobs.ingest.job names it.
INGEST_APP = "tickcast-ingest"
# Short, so that requests made while PostgreSQL is down go past the key cache and meet the store.
KEY_CACHE_SECONDS = 0.5


class Feed:
    """One tick per symbol per round through the platform's producer; ``ids`` in produce order.
    Every tenth round also sends a copy of its last tick (a feed retrying from scratch) and a
    tick with a negative price, which the ingest quarantines with their reasons."""

    def __init__(self, settings: Settings):
        self.producer = TickProducer(settings).connect()
        self.ids: list[str] = []
        self.quarantined: dict[str, set[str]] = {"duplicate_msg_id": set(), "invalid_price": set()}
        self.rounds = 0

    def _send(self, msg_id: str, symbol: str, now: str, price: float) -> None:
        self.producer.send(symbol, encode_tick(make_tick(
            msg_id=msg_id, symbol=symbol, ts=now, price=price, volume=1.0, source="faults", produced_at=now)))

    def round(self) -> None:
        now = format_ts(datetime.now(UTC))
        for symbol in SYMBOLS:
            msg_id = f"{symbol}-{len(self.ids)}"
            self._send(msg_id, symbol, now, 100.0 + len(self.ids) % 17 * 0.25)
            self.ids.append(msg_id)
        self.rounds += 1
        if self.rounds % 10 == 0:
            symbol = SYMBOLS[-1]
            self._send(self.ids[-1], symbol, now, 100.0 + (len(self.ids) - 1) % 17 * 0.25)
            self.quarantined["duplicate_msg_id"].add(self.ids[-1])
            self._send(f"{symbol}-bad-{self.rounds}", symbol, now, -1.0)
            self.quarantined["invalid_price"].add(f"{symbol}-bad-{self.rounds}")
        self.producer.poll(0)

    @property
    def sent(self) -> int:
        return len(self.ids) + sum(len(ids) for ids in self.quarantined.values())

    def acked(self) -> bool:
        self.producer.poll(0.1)
        assert self.producer.stats.failed == 0, self.producer.stats.summary()
        return self.producer.in_flight == 0


class Reader(threading.Thread):
    """Asks the API for a prediction every 0.2 s until stopped; counts the statuses it gets and
    keeps every answer that was neither a 200 nor a 503 saying why."""

    def __init__(self, base_url: str, key: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30)
        self.statuses: Counter[int] = Counter()
        self.wrong: list[str] = []
        self.last: int | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                response = self.client.get("/api/v1/predictions", params={"symbols": "S0001"})
            except httpx.HTTPError as exc:  # the port itself closed: the API would have to be down
                self.wrong.append(f"{type(exc).__name__}: {exc}")
            else:
                self.statuses[response.status_code] += 1
                self.last = response.status_code
                clear_503 = response.status_code == 503 and bool(response.json().get("detail")) \
                    and "Retry-After" in response.headers
                if response.status_code != 200 and not clear_503:
                    self.wrong.append(f"{response.status_code}: {response.text[:300]}")
            self._halt.wait(0.2)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)
        self.client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """``tickcast up`` on the cluster profile, a fresh home and free ports; its env and settings."""
    root = tmp_path_factory.mktemp("cluster")
    home = root / "var"
    env = {**os.environ, "TICKCAST_PROFILE": "cluster", "TICKCAST_HOME": str(home),
           "TICKCAST_AIRFLOW_ENABLED": "false", "TICKCAST_API_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
           **free_platform_ports(kafka_nodes=3, spark_workers=2)}
    started = time.monotonic()
    try:
        up = subprocess.run([TICKCAST, "up", "--timeout", "900"], env=env, cwd=root, capture_output=True, text=True,
                            timeout=1000)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        print(f"cluster profile up in {time.monotonic() - started:.0f} s")
        with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("TICKCAST_")}):
            settings = Settings()
        yield env, settings
    finally:
        subprocess.run([TICKCAST, "down"], env=env, cwd=root, capture_output=True, text=True, timeout=600)


def _status(env: dict[str, str]) -> dict:
    shown = subprocess.run([TICKCAST, "status", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    return json.loads(shown.stdout)


def _stored(settings: Settings) -> set[str]:
    rows = delta_rows(settings, tables.TICKS, ["msg_id"])
    return set() if rows is None else set(rows.column("msg_id").to_pylist())


def _topic_config(settings: Settings, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(settings.kafka_client_config("admin"))
    resource = ConfigResource("topic", topic)
    return {name: entry.value for name, entry in admin.describe_configs([resource])[resource].result(30).items()}


def _log_tail(settings: Settings, *programs: str, lines: int = 30) -> str:
    parts = []
    for name in programs:
        path = settings.home_dir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        parts.append(f"== {name}\n" + "\n".join(line[:300] for line in text))
    return "\n".join(parts)


def test_status_shows_three_brokers_the_spark_cluster_postgres_and_redis(cluster) -> None:
    env, settings = cluster
    status = _status(env)
    assert status["running"]
    states = {p["name"]: p["state"] for p in status["programs"]}
    assert {name for name, state in states.items() if state != "RUNNING"} == set(), states
    assert {"kafka-1", "kafka-2", "kafka-3", "spark-master", "spark-worker-1", "spark-worker-2", "postgres",
            "redis", "ingest", "bars", "scorer", "api", "alerts", "feed"} <= set(states)
    nodes = status["kafka_nodes"]
    assert [(n["node_id"], n["alive"], n["under_replicated"]) for n in nodes] == [(1, True, 0), (2, True, 0),
                                                                                    (3, True, 0)]
    assert sorted(p for n in nodes for p in n["leads"]) == list(range(settings.topic_partitions))
    spark = status["spark"]
    assert spark["status"] == "ALIVE"
    assert [w["state"] for w in spark["workers"]] == ["ALIVE", "ALIVE"]
    assert status["postgres"] is not None and set(settings.POSTGRES_DATABASES) <= set(status["postgres"]["databases"])
    assert status["redis"] is not None and status["redis"]["version"]
    # One cluster: every node's storage formatted with the id kept beside them, under its own node id.
    cluster_id = (settings.home_dir / "kafka" / "cluster-id").read_text().strip()
    formatted = [dict(line.split("=", 1) for line in (layout.log_dir / "meta.properties").read_text().splitlines()
                      if "=" in line) for layout in cluster_layouts(settings)]
    assert [(m["cluster.id"], m["node.id"]) for m in formatted] == [(cluster_id, str(i)) for i in (1, 2, 3)]
    config = _topic_config(settings, settings.topic_ticks)
    assert (config["min.insync.replicas"], len(cluster_layouts(settings))) == ("2", 3)


def test_every_listener_of_the_cluster_is_on_loopback(cluster) -> None:
    env, settings = cluster
    listening = platform_listeners(settings.home_dir)
    ports = {port for _, port in listening}
    # The three nodes, Redis, the Spark master and its workers' UIs, the API; PostgreSQL has no TCP port.
    assert {settings.redis_port, settings.spark_master_port, settings.spark_master_webui_port,
            settings.api_port, *(layout.port for layout in cluster_layouts(settings))} <= ports, listening
    assert settings.postgres_port not in ports
    assert [(address, port) for address, port in listening if not is_loopback(address)] == []


def test_prometheus_scrapes_every_component_of_the_cluster(cluster) -> None:
    env, settings = cluster
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/targets"

    def targets() -> list[dict]:
        return httpx.get(url, timeout=10).json()["data"]["activeTargets"]

    def all_up() -> bool:
        found = targets()
        return bool(found) and all(t["health"] == "up" for t in found)

    wait_until(all_up, timeout=120, interval=2, what="every Prometheus target up",
               on_timeout=lambda: json.dumps([(t["labels"].get("job"), t["health"], t.get("lastError"))
                                              for t in targets()]))
    jobs = Counter(t["labels"]["job"] for t in targets())
    # Each Kafka node through its JMX exporter; Spark's master and workers through their servlet.
    assert (jobs["kafka"], jobs["spark-master"], jobs["spark-worker"], jobs["api"], jobs["pipeline"]) == (3, 1, 2, 1, 1), jobs


@pytest.mark.timeout(1200)
def test_faults_on_the_running_cluster_lose_no_tick_and_the_platform_recovers(cluster) -> None:
    env, settings = cluster
    supervisor = Supervisor(settings)
    made = subprocess.run([TICKCAST, "apikey", "create", "--name", "cluster-reader", "--scopes", "read",
                           "--rate-limit", "100000/second"], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1].strip()
    reader = Reader(f"http://127.0.0.1:{settings.api_port}", key)
    feed = Feed(settings)

    def stores(what: str, timeout: float = 240) -> None:
        """Feed rounds until the ingest stored a tick produced now."""
        feed.round()
        newest = feed.ids[-1]

        def stored() -> bool:
            feed.round()
            return newest in _stored(settings)

        wait_until(stored, timeout=timeout, interval=0.5, what=what,
                   on_timeout=lambda: _log_tail(settings, "ingest", *program_names(settings)))

    def pid(program: str) -> int:
        info = supervisor.processes()[program]
        assert info["statename"] == "RUNNING", info
        return int(info["pid"])

    reader.start()
    try:
        stores("the ingest storing our ticks")
        assert reader.last == 200, reader.statuses
        ingest_pid = pid("ingest")

        # 1. The leader of partition 0 SIGKILLed: writes acknowledged and stored without it.
        killed = next(node.node_id for node in node_statuses(settings) if 0 in node.leads)
        program = next(name for name in program_names(settings) if program_layout(settings, name).node_id == killed)
        killed_pid = pid(program)
        os.kill(killed_pid, signal.SIGKILL)
        stores(f"ticks stored with node {killed} killed")
        wait_until(feed.acked, timeout=120, interval=0, what=f"every tick acknowledged with node {killed} killed")
        # supervisord started it again on its ports and log dir: back in every ISR, no step of ours.
        wait_until(lambda: supervisor.processes()[program]["pid"] not in (0, killed_pid)
                   and all(n.alive and not n.under_replicated for n in node_statuses(settings)),
                   timeout=180, interval=1, what=f"node {killed} restarted and back in sync")

        # 2. Another node (one leading a partition now) paused past its session, then resumed.
        paused = next(node.node_id for node in node_statuses(settings) if node.leads and node.node_id != killed)
        paused_program = next(name for name in program_names(settings)
                              if program_layout(settings, name).node_id == paused)
        paused_pid = pid(paused_program)
        os.kill(paused_pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + PAUSE_SECONDS
            while time.monotonic() < deadline:  # the outage itself, with the feed going on
                feed.round()
                feed.producer.poll(0.5)

            def fenced() -> bool:
                """What `tickcast status` shows of it: out of the cluster, leading nothing."""
                feed.round()
                shown = {node.node_id: node for node in node_statuses(settings)}
                return (not shown[paused].alive and not shown[paused].leads
                        and sum(len(node.leads) for node in shown.values()) == settings.topic_partitions)

            wait_until(fenced, timeout=60, interval=0.5, what=f"node {paused} shown out of the cluster")
        finally:
            os.kill(paused_pid, signal.SIGCONT)
        stores(f"ticks stored after node {paused} resumed")
        assert pid(paused_program) == paused_pid  # resumed, not restarted

        # 3. The worker running the ingest's executor lost with everything it started, while a
        # micro-batch of `ticks` is in flight (planned in the checkpoint, not committed).
        layout = spark_cluster.layout_for(settings)
        checkpoint = settings.checkpoint_dir / "ticks" / "spark"

        def ingest_worker() -> int | None:
            hosts = [i for i in range(1, layout.workers + 1)
                     if any(e.get("appdesc", {}).get("name") == INGEST_APP
                            for e in spark_cluster.worker_executors(layout.worker_webui_url(i)))]
            return hosts[0] if len(hosts) == 1 else None

        def in_flight() -> int | None:
            planned, committed = checkpoint_batches(checkpoint / "offsets"), checkpoint_batches(checkpoint / "commits")
            return planned[-1] if planned and committed and planned[-1] > committed[-1] else None

        wait_until(lambda: ingest_worker() is not None and in_flight() is not None, timeout=120, interval=0.1,
                   what="a ticks batch in flight on the cluster")
        lost_index, batch = ingest_worker(), in_flight()
        assert lost_index is not None and batch is not None
        lost = spark_cluster.worker_program(lost_index)
        ingest_log = settings.home_dir / "logs" / "ingest.log"
        log_offset = ingest_log.stat().st_size
        os.killpg(pid(lost), signal.SIGKILL)  # supervisord makes each program a process group
        stores(f"ticks stored after {lost} was killed with batch {batch} in flight", timeout=300)
        wait_until(lambda: batch in checkpoint_batches(checkpoint / "commits"), timeout=120, interval=0.5,
                   what=f"batch {batch} committed")
        with ingest_log.open("rb") as log:
            log.seek(log_offset)
            after_kill = log.read().decode(errors="replace")
        assert "Lost executor" in after_kill or "ExecutorLostFailure" in after_kill, after_kill[-3000:]
        wait_until(lambda: spark_cluster.probe(layout, lost) is None, timeout=180, interval=1,
                   what=f"{lost} restarted and registered again")

        # 4. PostgreSQL restarted under the API, the alert engine and MLflow.
        alerts_pid = pid("alerts")
        before = reader.statuses[503]
        supervisor.stop("postgres")
        time.sleep(3 * KEY_CACHE_SECONDS)
        supervisor.start("postgres")
        wait_until(lambda: reader.last == 200, timeout=120, interval=0.5, what="the API answering 200 again")
        print(f"503s during the PostgreSQL restart: {reader.statuses[503] - before}")
        # The alert engine waited for its store rather than exiting.
        assert pid("alerts") == alerts_pid, _log_tail(settings, "alerts")

        stores("ticks stored after every fault")
        # The ingest recovered by itself: the same process throughout, never restarted.
        assert pid("ingest") == ingest_pid
        stats = feed.producer.close()
        assert (stats.failed, stats.delivered) == (0, feed.sent), stats.summary()
        produced = set(feed.ids)
        wait_until(lambda: produced <= _stored(settings), timeout=180, interval=1,
                   what="every acknowledged tick stored", on_timeout=lambda: _log_tail(settings, "ingest"))
        expected = set().union(*feed.quarantined.values())

        def quarantined() -> set[str]:
            rows = delta_rows(settings, tables.QUARANTINE, ["msg_id"])
            return set() if rows is None else set(rows.column("msg_id").to_pylist())

        wait_until(lambda: expected <= quarantined(), timeout=120, interval=1,
                   what="every copy and bad tick quarantined", on_timeout=lambda: _log_tail(settings, "ingest"))
    finally:
        reader.stop()
        feed.producer.close(timeout=5)

    # The API kept serving: 200s, and 503s with their reason while a store was away; nothing else.
    assert reader.wrong == [], reader.wrong[:10]
    assert reader.statuses[200] > 0 and set(reader.statuses) <= {200, 503}, reader.statuses

    # Recovered with no step of ours: every program running, both queries making new batches.
    def batches() -> dict[str, int]:
        return {q["name"]: q["batch_id"] for q in _status(env)["queries"] if q["name"] in ("ticks", "bars")}

    after_faults = batches()

    def recovered() -> bool:
        status = _status(env)
        now = {q["name"]: q["batch_id"] for q in status["queries"]}
        return (all(p["state"] == "RUNNING" for p in status["programs"])
                and all(n["alive"] and not n["under_replicated"] for n in status["kafka_nodes"])
                and [w["state"] for w in status["spark"]["workers"]].count("ALIVE") == 2
                and all((now.get(name) or -1) > (after_faults.get(name) or -1) for name in ("ticks", "bars")))

    wait_until(recovered, timeout=300, interval=5, what="every program running and every query making batches",
               on_timeout=lambda: json.dumps(_status(env), indent=1)[:4000])

    # Exactly once, by Kafka position: each record one row of ticks or of quarantine, none twice.
    ticks = delta_frame(settings, tables.TICKS, ["msg_id", "kafka_partition", "kafka_offset"])
    quarantine = delta_frame(settings, tables.QUARANTINE, ["reason", "msg_id", "kafka_partition", "kafka_offset"])
    positions = [*zip(ticks["kafka_partition"], ticks["kafka_offset"], strict=True),
                 *zip(quarantine["kafka_partition"], quarantine["kafka_offset"], strict=True)]
    assert len(positions) == len(set(positions))
    # By msg_id: each acknowledged tick stored once; each copy and each bad tick quarantined once,
    # with its reason, and nothing else of ours.
    assert ticks["msg_id"].is_unique, ticks[ticks["msg_id"].duplicated(keep=False)]
    ours = ticks[ticks["msg_id"].str.split("-").str[0].isin(SYMBOLS)]
    assert set(ours["msg_id"]) == produced
    our_quarantine = quarantine[quarantine["msg_id"].str.split("-").str[0].isin(SYMBOLS)]
    assert len(our_quarantine) == sum(len(ids) for ids in feed.quarantined.values())
    assert our_quarantine.groupby("reason")["msg_id"].apply(set).to_dict() == feed.quarantined
    print(f"{len(produced)} ticks acknowledged and stored once, {len(our_quarantine)} copies and bad ticks "
          f"quarantined once; node {killed} killed, node {paused} paused "
          f"{PAUSE_SECONDS} s, {lost} killed with batch {batch} in flight, "
          f"PostgreSQL restarted; API statuses {dict(reader.statuses)}")
