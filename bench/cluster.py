"""Benchmark: the cluster profile's figures for docs/scaling.md, each beside a same-run baseline.

    .venv/bin/python bench/cluster.py [--part all|kafka|spark|up] [--quick] [--messages 400000]
                                      [--partitions 1,6] [--drain 200000] [--queries ticks,bars]
                                      [--repeats 2] [--airflow]

Everything is real, on scratch homes and free ports.

1. ``kafka``: produce throughput per partition of one producer (the feeds' producer settings:
   acks=all, idempotent, lz4; JSON ticks of about 250 bytes, no two alike) and a bare consumer's, on the three-node embedded
   cluster at replication factor 3 with min.insync.replicas 2 (SCRAM logins, as `up` runs it)
   against one node at replication factor 1 (baseline), interleaved ``--repeats`` times, for
   each topic size in ``--partitions``.
2. ``spark``: the ``ticks`` query draining ``--drain`` ticks with one core, on a Spark standalone
   cluster (one worker of one core: ``spark://``) against ``local[1]`` (baseline), interleaved;
   then the ``bars`` query folding the ticks it stored. Rows/s over the micro-batches' own
   durations, the first batch left out when there are several (bench/stream.py's ``spark_drain``).
3. ``up``: ``tickcast up`` with the cluster profile on a fresh home (Airflow off unless
   ``--airflow``): seconds to healthy, the platform's memory (PSS and RSS summed over every process
   of supervisord's session) once up and after ``--settle`` seconds, and ``tickcast down``'s
   seconds; the single profile's (baseline) in the same run.

Prints a table per part with the figures, the conditions and the machine; writes
bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine, save_result  # noqa: E402 - bench/ is sys.path[0] for a benchmark

# -- 1. Kafka per partition -----------------------------------------------------------------------


def _tick(i: int) -> bytes:
    """A tick as the feeds send it (JSON, about 250 bytes), no two alike."""
    at = f"2026-12-06T10:{i // 60 % 60:02d}:{i % 60:02d}.{i * 7919 % 1_000_000:06d}Z"
    return json.dumps({"schema_version": 1, "msg_id": f"bench-{i:08d}-{i * 2654435761 % 2**32:08x}",
                       "symbol": f"S{i % 5000:04d}", "ts": at, "price": round(20 + (i * 37 % 10_000) * 0.0173, 4),
                       "volume": float(1 + i * 13 % 500), "bid": None, "ask": None, "source": "bench",
                       "produced_at": at}).encode()


def kafka_round(settings, topic: str, partitions: int, messages: int) -> dict:
    """Create ``topic`` (the settings' replication), produce ``messages`` through one producer,
    then read them all with one consumer: msg/s and MB/s of each."""

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from stream import consume_rate

    from tickcast.feeds.producer import DEFAULT_PRODUCER_CONFIG

    # The admin principal throughout: the roles' ACLs name the platform's own topics only.
    admin = AdminClient(settings.kafka_client_config("admin"))
    replication = settings.topic_replication_factor
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                   config={"min.insync.replicas": str(settings.topic_min_insync_replicas)})
    for future in admin.create_topics([new]).values():
        future.result(timeout=60)
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, **settings.kafka_client_config("admin")})
    failed = 0

    def delivered(err, _msg) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    payloads = [_tick(i) for i in range(10_000)]
    tick_bytes = statistics.mean(len(p) for p in payloads)
    started = time.monotonic()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, key=f"S{i % 5000:04d}".encode(), value=payloads[i % 10_000],
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "the producer did not deliver everything"
    produce_seconds = time.monotonic() - started
    consumed = consume_rate(settings.kafka_bootstrap_servers, topic, messages,
                            client=settings.kafka_client_config("admin"))
    return {"partitions": partitions, "replication": replication, "messages": messages, "failed": failed,
            "tick_bytes": tick_bytes, "produce_msg_s": messages / produce_seconds,
            "produce_mb_s": messages * tick_bytes / produce_seconds / 1e6,
            "consumed": consumed["rows"], "consume_msg_s": consumed["rows_per_s"]}


def run_kafka(args, scratch: Path) -> list[dict]:
    from tickcast.core.settings import Settings
    from tickcast.platform.broker import BrokerProcess, ClusterProcess, for_layout

    base = Settings(home=scratch / "kafka-home")
    base.home_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with ClusterProcess(base, scratch / "cluster", nodes=3, auth=True) as cluster, \
            BrokerProcess(base, scratch / "single", auth=True) as single:
        single_settings = for_layout(base, single.layout, auth=True)
        for repeat in range(args.repeats):
            for partitions in args.partitions:
                for name, settings in (("1 node, RF 1", single_settings), ("3 nodes, RF 3", cluster.settings)):
                    topic = f"bench-{partitions}p-{repeat}"
                    row = kafka_round(settings, topic, partitions, args.messages)
                    row.update(setup=name, repeat=repeat)
                    rows.append(row)
                    print(f"  kafka {name}, {partitions} partition(s), round {repeat + 1}: produce "
                          f"{row['produce_msg_s']:,.0f} msg/s ({row['produce_mb_s']:.1f} MB/s), consume "
                          f"{row['consume_msg_s']:,.0f} msg/s", flush=True)
    return rows


# -- 2. Spark per core ----------------------------------------------------------------------------


def run_spark(args, scratch: Path) -> list[dict]:
    from stream import spark_subprocess_on

    from tickcast.core.settings import Settings
    from tickcast.platform.broker import running_broker
    from tickcast.platform.spark_cluster import StandaloneCluster

    rows: list[dict] = []
    base = Settings(home=scratch / "spark-home", kafka_embedded_auth=False)
    base.home_dir.mkdir(parents=True, exist_ok=True)
    with running_broker(base, scratch / "spark-broker") as bootstrap, \
            StandaloneCluster(scratch / "spark-cluster", workers=1, cores=1, memory="2g") as cluster:
        settings = base.model_copy(update={"kafka_bootstrap_servers": bootstrap})
        topic = "bench-ticks"
        produce_backlog(settings, topic, args.drain, symbols=2000)
        for repeat in range(args.repeats):
            for query in args.queries:
                for name, master in (("local[1]", "local[1]"), ("spark:// (1 core)", cluster.url)):
                    home = scratch / f"drain-{query}-{repeat}-{'local' if master.startswith('local') else 'cluster'}"
                    row = spark_subprocess_on(master, home, bootstrap, topic, max_offsets=50_000, shuffle=2,
                                              kind=query)
                    row.update(setup=name, repeat=repeat, query=query)
                    rows.append(row)
                    print(f"  spark {query} query, {name}, round {repeat + 1}: {row['rows_per_s']:,.0f} ticks/s over "
                          f"{row['batches']} batches", flush=True)
    return rows


def produce_backlog(settings, topic: str, count: int, symbols: int) -> None:
    """``count`` synthetic ticks on ``topic`` (created with 4 partitions) through the project's feed."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)]).values():
        future.result(timeout=60)
    env = {**os.environ, "TICKCAST_HOME": str(settings.home_dir), "TICKCAST_KAFKA_EMBEDDED_AUTH": "false"}
    # As bench/stream.py produces its backlog: a paced rate the producer holds, for a known count.
    seconds = max(count / 100_000, 1)
    subprocess.run([str(REPO / ".venv" / "bin" / "tickcast"), "produce", "synthetic", "--symbols", str(symbols),
                    "--rate", str(int(count / seconds)), "--seconds", f"{seconds:g}",
                    "--bootstrap-servers", settings.kafka_bootstrap_servers, "--topic", topic],
                   env=env, check=True, capture_output=True, timeout=600)


# -- 3. the profile's start-up and memory ---------------------------------------------------------


def platform_memory(pidfile: Path) -> dict:
    import psutil

    session = int(pidfile.read_text().strip())
    pss = rss = 0
    processes = 0
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) != session:
                continue
            info = process.memory_full_info()
        except (OSError, psutil.Error):
            continue
        pss, rss, processes = pss + info.pss, rss + info.rss, processes + 1
    return {"pss_gib": pss / 2**30, "rss_gib": rss / 2**30, "processes": processes}


def profile_env(profile: str, home: Path, airflow: bool) -> dict[str, str]:
    from tickcast.platform.processes import free_platform_ports

    cluster = profile == "cluster"
    return {**os.environ, "TICKCAST_PROFILE": profile, "TICKCAST_HOME": str(home),
            "TICKCAST_AIRFLOW_ENABLED": "true" if airflow else "false",
            **free_platform_ports(kafka_nodes=3 if cluster else 1, spark_workers=2 if cluster else 0)}


def run_up(args, scratch: Path) -> list[dict]:
    tickcast = str(REPO / ".venv" / "bin" / "tickcast")
    rows = []
    for profile in ("single", "cluster"):
        home = scratch / f"up-{profile}" / "var"
        env = profile_env(profile, home, args.airflow)
        log = home.parent / "up.log"
        home.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run([tickcast, "up", "--timeout", "1500"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=1800)
        up_seconds = time.monotonic() - started
        row: dict = {"profile": profile, "airflow": args.airflow, "up_ok": done.returncode == 0,
                     "up_seconds": up_seconds}
        try:
            if done.returncode == 0:
                pidfile = home / "run" / "supervisord.pid"
                row["memory_up"] = platform_memory(pidfile)
                time.sleep(args.settle)
                row["memory_settled"] = platform_memory(pidfile)
        finally:
            started = time.monotonic()
            subprocess.run([tickcast, "down"], env=env, capture_output=True, timeout=900)
            row["down_seconds"] = time.monotonic() - started
        rows.append(row)
        print(f"  up {profile}: {'healthy' if row['up_ok'] else 'FAILED (see ' + str(log) + ')'} in "
              f"{up_seconds:.0f} s; down {row['down_seconds']:.0f} s", flush=True)
    return rows


# -- report ---------------------------------------------------------------------------------------


def report(machine: str, kafka: list[dict], spark: list[dict], up: list[dict], args) -> None:
    print(f"\nmachine: {machine}")
    if kafka:
        size = statistics.mean(r["tick_bytes"] for r in kafka)
        print(f"\nKafka, one producer (the feeds' settings: acks=all, idempotent, lz4) then one consumer, "
              f"{args.messages:,} ticks of {size:.0f} B (JSON) per round, medians of {args.repeats} interleaved rounds:")
        print("| partitions | setup | produce msg/s | produce MB/s | consume msg/s | produce vs 1 node |")
        print("|---|---|---|---|---|---|")
        for partitions in args.partitions:
            medians = {}
            for setup in ("1 node, RF 1", "3 nodes, RF 3"):
                picked = [r for r in kafka if r["partitions"] == partitions and r["setup"] == setup]
                medians[setup] = {key: statistics.median(r[key] for r in picked)
                                  for key in ("produce_msg_s", "produce_mb_s", "consume_msg_s")}
            for setup, m in medians.items():
                ratio = m["produce_msg_s"] / medians["1 node, RF 1"]["produce_msg_s"]
                print(f"| {partitions} | {setup} | {m['produce_msg_s']:,.0f} | {m['produce_mb_s']:.1f} | "
                      f"{m['consume_msg_s']:,.0f} | {ratio:.2f} |")
    if spark:
        print(f"\nEach query with one core on {args.drain:,} ticks of 2,000 symbols: ticks drains them from Kafka, "
              f"50,000 per batch (the first batch left out); bars folds what ticks stored (one batch: the "
              f"whole table); medians of {args.repeats} interleaved rounds:")
        print("| query | setup | ticks/s | vs local[1] |")
        print("|---|---|---|---|")
        for query in args.queries:
            picked = [r for r in spark if r["query"] == query]
            local = statistics.median(r["rows_per_s"] for r in picked if r["setup"] == "local[1]")
            for setup in ("local[1]", "spark:// (1 core)"):
                value = statistics.median(r["rows_per_s"] for r in picked if r["setup"] == setup)
                print(f"| {query} | {setup} | {value:,.0f} | {value / local:.2f} |")
    if up:
        print(f"\n`tickcast up` on a fresh home, Airflow {'on' if args.airflow else 'off'}; memory summed over the "
              f"platform's processes (PSS / RSS), once healthy and {args.settle:.0f} s later:")
        print("| profile | up (s) | memory once up | memory settled | processes | down (s) |")
        print("|---|---|---|---|---|---|")
        for row in up:
            if not row["up_ok"]:
                print(f"| {row['profile']} | failed | - | - | - | {row['down_seconds']:.0f} |")
                continue
            first, settled = row["memory_up"], row["memory_settled"]
            print(f"| {row['profile']} | {row['up_seconds']:.0f} | {first['pss_gib']:.1f} / {first['rss_gib']:.1f} GiB"
                  f" | {settled['pss_gib']:.1f} / {settled['rss_gib']:.1f} GiB | {settled['processes']} | "
                  f"{row['down_seconds']:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "kafka", "spark", "up"), default="all")
    parser.add_argument("--messages", type=int, default=400_000, help="ticks per Kafka round")
    parser.add_argument("--partitions", default="1,6", help="topic sizes of the Kafka rounds")
    parser.add_argument("--drain", type=int, default=200_000, help="ticks drained by each Spark round")
    parser.add_argument("--queries", default="ticks,bars", help="the ingest queries of the Spark part")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of each part")
    parser.add_argument("--airflow", action="store_true", help="Airflow on in the `up` part (as `make up` runs it)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds between the two memory readings")
    parser.add_argument("--quick", action="store_true", help="a smoke run at a small scale (not a measurement)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "cluster.json")
    args = parser.parse_args()
    args.partitions = [int(p) for p in str(args.partitions).split(",")]
    args.queries = [q for q in str(args.queries).split(",") if q]
    if args.quick:
        args.messages, args.drain, args.repeats, args.settle = 20_000, 20_000, 1, 5
    machine = describe_machine(java=True)
    print(f"machine: {machine}", flush=True)
    kafka: list[dict] = []
    spark: list[dict] = []
    up: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-cluster-") as tmp:
        scratch = Path(tmp)
        if args.part in ("all", "kafka"):
            kafka = run_kafka(args, scratch)
        if args.part in ("all", "spark"):
            spark = run_spark(args, scratch)
        if args.part in ("all", "up"):
            up = run_up(args, scratch)
    report(machine, kafka, spark, up, args)
    save_result({"machine": machine, "args": {k: v for k, v in vars(args).items() if k != "output"},
                 "kafka": kafka, "spark": spark, "up": up}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
