"""Benchmark: sustained ticks/s into Delta and produced_at -> queryable latency.

    .venv/bin/python bench/ingest.py [--symbols 5000] [--rate 20000] [--seconds 60]

Starts its own Kafka broker and `tickcast stream ingest` in a scratch home, drives the
synthetic feed, then reads the Delta logs: every micro-batch commit carries a ``txn``
action (the batch id) and a commit timestamp, and every stored tick carries its batch,
so a tick's latency is exactly commit time minus ``produced_at``, per table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark

from tickcast.catalog import tables  # noqa: E402
from tickcast.catalog.tables import delta_rows  # noqa: E402
from tickcast.catalog.topics import topic_message_count  # noqa: E402
from tickcast.core.settings import Settings  # noqa: E402
from tickcast.platform.broker import running_broker  # noqa: E402
from tickcast.platform.jars import ensure_jars  # noqa: E402
from tickcast.platform.processes import TICKCAST, wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000, help="symbols in the synthetic feed")
    parser.add_argument("--rate", type=int, default=20000, help="target ticks/s from the feed")
    parser.add_argument("--seconds", type=int, default=60, help="how long the feed runs")
    parser.add_argument("--trigger-seconds", type=float, default=1.0, help="micro-batch interval")
    parser.add_argument("--master", default="local[*]", help="Spark master for the ingest job")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home for inspection")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="tickcast-bench-ingest-"))
    settings = Settings(home=scratch / "home", spark_master=args.master)
    ensure_jars(settings)
    print(f"scratch home {scratch}", flush=True)
    try:
        with running_broker(settings, scratch / "kafka") as bootstrap:
            env = {
                **os.environ,
                "TICKCAST_HOME": str(settings.home_dir),
                "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "TICKCAST_SPARK_MASTER": args.master,
                "TICKCAST_INGEST_TRIGGER_SECONDS": str(args.trigger_seconds),
            }
            subprocess.run([TICKCAST, "topics", "create"], env=env, check=True)
            log = (scratch / "ingest.log").open("w")
            ingest = subprocess.Popen([TICKCAST, "stream", "ingest"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            progress = settings.run_dir / "streaming-progress.json"
            print("waiting for the ingest query to start ...", flush=True)
            wait_until(progress.exists, timeout=300, what="the ingest query's first progress report")

            print(f"feeding {args.symbols} symbols at {args.rate} ticks/s for {args.seconds}s ...", flush=True)
            feed_started = time.time()
            subprocess.run(
                [TICKCAST, "produce", "synthetic", "--symbols", str(args.symbols), "--rate", str(args.rate),
                 "--seconds", str(args.seconds)], env=env, check=True,
            )
            feed_seconds = time.time() - feed_started
            produced = topic_message_count(bootstrap, settings.topic_ticks)
            print(f"produced {produced} ticks in {feed_seconds:.1f}s; waiting for ingest to drain ...", flush=True)

            def stored() -> int:
                rows = delta_rows(settings, tables.TICKS, ["msg_id"])
                return 0 if rows is None else rows.num_rows

            wait_until(lambda: stored() >= produced, timeout=1800, interval=2.0,
                       what=f"{produced} ticks in Delta")
            drained_at = time.time()
            os.killpg(ingest.pid, 15)
            ingest.wait(timeout=120)

        ticks = delta_rows(settings, tables.TICKS, ["produced_at", "ingest_batch"]).to_pandas()
        batch_of = ticks["ingest_batch"].str.rsplit(":", n=1).str[1].astype(int)
        produced_at = ticks["produced_at"].astype("int64").to_numpy() / 1e6  # us -> s
        if ticks["produced_at"].dtype.kind == "M":
            produced_at = ticks["produced_at"].dt.tz_localize(None).astype("datetime64[us]").astype("int64").to_numpy() / 1e6
        results = {}
        for table in (tables.TICKS, tables.bars("1m")):
            commits = tables.batch_commit_times(settings, table)
            committed = batch_of.map(commits).to_numpy(dtype=float)
            latency = committed - produced_at
            latency = latency[~np.isnan(latency)]
            results[table] = {
                "p50_s": float(np.percentile(latency, 50)),
                "p99_s": float(np.percentile(latency, 99)),
                "max_s": float(latency.max()),
            }
        tick_commits = tables.batch_commit_times(settings, tables.TICKS)
        first, last = min(tick_commits.values()), max(tick_commits.values())
        batches = len(tick_commits)
        sustained = len(ticks) / max(drained_at - feed_started, 1e-9)
        figures = {
            "produced": produced,
            "stored": int(len(ticks)),
            "feed_rate_achieved": produced / feed_seconds,
            "sustained_ticks_per_s": sustained,
            "micro_batches": batches,
            "mean_batch_interval_s": (last - first) / max(batches - 1, 1),
            "drain_after_feed_s": drained_at - feed_started - feed_seconds,
            "latency": results,
        }
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    conditions = (f"{args.symbols} symbols, feed target {args.rate} ticks/s for {args.seconds}s, "
                  f"Spark {args.master}, trigger {args.trigger_seconds}s, 1 broker, 4 partitions")
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bench/ingest: ticks -> Kafka -> Spark -> Delta")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("ticks produced / stored", f"{produced} / {figures['stored']}")
    table.add_row("feed rate achieved (ticks/s)", f"{figures['feed_rate_achieved']:,.0f}")
    table.add_row("sustained into Delta (ticks/s, feed start -> drained)", f"{sustained:,.0f}")
    table.add_row("micro-batches, mean interval (s)", f"{batches}, {figures['mean_batch_interval_s']:.2f}")
    table.add_row("drain time after the feed stopped (s)", f"{figures['drain_after_feed_s']:.1f}")
    for name, res in results.items():
        table.add_row(f"produced_at -> queryable in {name}: p50 / p99 (s)",
                      f"{res['p50_s']:.2f} / {res['p99_s']:.2f}")
    table.caption = f"conditions: {conditions}\nmachine: {describe_machine(java=True)}\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    Console().print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"conditions": conditions, "machine": describe_machine(java=True), **figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
