"""Benchmark: the stream - the ingest, and the predictions made of it - against same-run baselines.

    .venv/bin/python bench/stream.py [--part all|ingest|predictions] [--quick] [--symbols 5000] [--repeats 3]
                                     [--backlog 600000] [--rates 10000,20000,...] [--step-seconds 60]
                                     [--tick-rate 5001] [--pred-warmup 30] [--pred-seconds 60] [--get-rate 1000]

Everything is real and runs on a scratch TICKCAST_HOME with its own Kafka broker (one per
part). On a shared 2-core machine absolute times drift, so each figure is reported beside
baselines measured in the same run, interleaved. ``--part ingest`` (1 and 2 below),
``--part predictions`` (3), or both (the default, what `make bench-stream` runs); ``--quick``
is a smoke run at a small scale (200 symbols, seconds per step), not a measurement.

The ingest:

1. Capacity (``--repeats`` rounds of B0, B1, ticks, in that order each round). A backlog of
   ``--backlog`` synthetic ticks of ``--symbols`` symbols is produced once; then each of these
   drains it from the earliest offset, ``--max-offsets`` per micro-batch:
   B0, a bare confluent-kafka consumer reading every message of the topic (Python, this process);
   B1, a bare Spark query, Kafka -> Delta append of the raw value (same session settings);
   ticks, the ``ticks`` query of `tickcast stream ingest` (parse, dedupe in RocksDB state,
   lateness, append to ``ticks``).
   Spark's rows/s is rows over the micro-batches' own durations, the first batch (JIT, imports)
   left out.
2. Latency at open-loop rates. The ``ticks`` and ``bars`` queries run, each in its own process
   as the platform runs them (`tickcast stream ingest --query ticks|bars`), while the synthetic
   feed produces at each of ``--rates`` in turn (``--warmup`` s, then ``--step-seconds``
   measured). Per step: the rate the feed reached (a step under 98 % of its rate is reported and
   marked discarded), the Kafka lag of the ``ticks`` query sampled every 2 s (flat: its fitted slope under 5 % of the rate),
   load average and each process's CPU, and produced_at -> queryable in ``ticks`` (commit time of
   the tick's micro-batch, from the Delta log) and in ``bars_1m`` (commit of the ``bars`` batch
   that folded that micro-batch, from the query's log line). The steps stop after the knee: the
   first step whose lag grows.

The predictions (bench/predictions.py has the details):

3. Tick produced -> the API serves a prediction that includes it (a WebSocket push, timed for
   the ticks of ``--observed-symbols``; target p99 <= 1 s at one tick per symbol per second),
   and GET one prediction at a paced ``--get-rate``
   req/s (target p99 <= 5 ms), while the ingest (both queries) runs: the live scorer with
   untrained champion models (B) interleaved A/B ``--repeats`` times with an echo scorer (A,
   bench/echo_scorer.py: consume, a trivial prediction, the same publish path and API).

Prints tables with the figures, the conditions and the machine; writes bench/results/stream.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark

BARS_LINE = re.compile(r"bars batch (\d+): (\d+) ticks of ticks batches (-?\d+)-(-?\d+) folded")
FEED_LINE = re.compile(r"produced ([\d,]+), delivered ([\d,]+), failed ([\d,]+) in ([\d.]+)s")


# -- the Spark side of the capacity runs (a subprocess each: its own JVM) ---------------------------


def spark_drain(kind: str, home: Path, bootstrap: str, topic: str, max_offsets: int, shuffle: int,
                master: str | None = None) -> dict:
    """Drain ``topic`` with the B1 query (``bare``) or the ``ticks`` query; rows/s over batches.
    ``bars``: the ``ticks`` query first, then the ``bars`` query folding what it stored (its rows/s
    are ticks folded per second). ``master``: another Spark master than the settings' default
    (bench/cluster.py: ``spark://``)."""
    from spark_jobs.ingest.ticks import TicksQuery
    from spark_jobs.session import build_spark
    from tickcast.catalog import tables
    from tickcast.core.settings import Settings

    settings = Settings(home=home, kafka_bootstrap_servers=bootstrap, topic_ticks=topic,
                        ingest_max_offsets_per_trigger=max_offsets, spark_shuffle_partitions=shuffle,
                        kafka_embedded_auth=False, **({"spark_master": master} if master else {}))
    spark = build_spark(settings, f"bench-stream-{kind}")
    tables.ensure_tables(spark, settings, None if kind == "bars" else [tables.TICKS, tables.QUARANTINE])
    if kind in ("ticks", "bars"):
        query = TicksQuery(settings, spark).start("earliest", available_now=True)
        if kind == "bars":
            from spark_jobs.ingest.bars import BarsQuery

            query.awaitTermination()
            query = BarsQuery(settings, spark).start(available_now=True)
    else:
        source = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
                  .option("subscribe", topic).option("startingOffsets", "earliest")
                  .option("maxOffsetsPerTrigger", str(max_offsets)).load())
        query = (source.selectExpr("CAST(value AS STRING) AS value", "partition", "offset")
                 .writeStream.format("delta").option("checkpointLocation", str(home / "bare-checkpoint"))
                 .trigger(availableNow=True).start(str(home / "bare-delta")))
    query.awaitTermination()
    progress = [p for p in query.recentProgress if p.numInputRows]
    spark.stop()
    measured = progress[1:] or progress
    rows = sum(p.numInputRows for p in measured)
    seconds = sum(p.durationMs["triggerExecution"] for p in measured) / 1000
    return {"rows": int(sum(p.numInputRows for p in progress)), "batches": len(progress),
            "rows_measured": int(rows), "seconds_measured": seconds, "rows_per_s": rows / seconds if seconds else None}


# -- the driver ------------------------------------------------------------------------------------


def run_cli(env: dict[str, str], *args: str, log: Path) -> str:
    from tickcast.platform.processes import TICKCAST

    with log.open("a") as out:
        done = subprocess.run([TICKCAST, *args], env=env, stdout=subprocess.PIPE, stderr=out, text=True)
        out.write(done.stdout)
    if done.returncode:
        raise RuntimeError(f"tickcast {' '.join(args)} exited {done.returncode}; see {log}")
    return done.stdout


def consume_rate(bootstrap: str, topic: str, expected: int, client: dict | None = None) -> dict:
    """B0: a bare consumer of every message of ``topic``, from the earliest offset (``client``:
    the connection's settings, for a broker that wants a login)."""
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer({**(client or {"bootstrap.servers": bootstrap}), "group.id": f"bench-b0-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    count, started = 0, None
    deadline = time.monotonic() + 600
    while count < expected and time.monotonic() < deadline:
        batch = consumer.consume(10_000, timeout=1.0)
        if batch and started is None:
            started = time.monotonic()
        count += sum(1 for m in batch if m.error() is None)
    seconds = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return {"rows": count, "seconds": seconds, "rows_per_s": count / seconds if seconds else None}


def spark_subprocess(kind: str, home: Path, bootstrap: str, topic: str, args) -> dict:
    return spark_subprocess_on(None, home, bootstrap, topic, args.max_offsets, args.shuffle, kind=kind)


def spark_subprocess_on(master: str | None, home: Path, bootstrap: str, topic: str, max_offsets: int, shuffle: int,
                        kind: str = "ticks") -> dict:
    """``spark_drain`` in a process (and JVM) of its own, on ``master`` (None: the settings' default)."""
    command = [sys.executable, __file__, "--drain-kind", kind, "--drain-home", str(home), "--bootstrap", bootstrap,
               "--topic", topic, "--max-offsets", str(max_offsets), "--shuffle", str(shuffle)]
    if master:
        command += ["--drain-master", master]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{kind} drain failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Sampler:
    """Every 2 s: the ticks query's Kafka lag, the load average, and CPU seconds per process tree."""

    def __init__(self, settings, bootstrap: str, topic: str, processes: dict[str, int]):
        self.settings, self.bootstrap, self.topic, self.processes = settings, bootstrap, topic, processes
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cpu(self) -> dict[str, float]:
        import psutil

        result = {}
        for name, pid in self.processes.items():
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
                result[name] = sum(sum(p.cpu_times()[:2]) for p in tree)
            except psutil.Error:
                result[name] = float("nan")
        return result

    def _run(self) -> None:
        from tickcast.platform.status import kafka_lag, read_progress, topic_watermarks

        while not self._stop.wait(2.0):
            progress = read_progress(self.settings).get("ticks", {})
            try:
                lag = kafka_lag(progress, topic_watermarks(self.settings, [self.topic])).get(self.topic)
            except Exception:  # noqa: BLE001 - a sample missed is a gap in the series, not a failure
                lag = None
            self.samples.append({"t": time.time(), "lag": lag, "load1": os.getloadavg()[0], "cpu": self._cpu()})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def window(self, start: float, end: float) -> list[dict]:
        return [s for s in self.samples if start <= s["t"] <= end]


def step_figures(settings, sampler: Sampler, bars_log: Path, start: float, end: float, rate: int) -> dict:
    import numpy as np
    import pyarrow.compute as pc

    from tickcast.catalog import tables

    samples = sampler.window(start, end)
    lags = [(s["t"], s["lag"]) for s in samples if s["lag"] is not None]
    slope = float(np.polyfit([t - start for t, _ in lags], [lag for _, lag in lags], 1)[0]) if len(lags) > 2 else None
    cpu = {}
    if len(samples) >= 2:
        for name in samples[0]["cpu"]:
            cpu[name] = (samples[-1]["cpu"][name] - samples[0]["cpu"][name]) / (samples[-1]["t"] - samples[0]["t"])
    ticks = tables.dataset(settings, tables.TICKS).to_table(columns=["produced_at", "ingest_batch"])
    produced = pc.divide(pc.cast(pc.cast(ticks["produced_at"], "timestamp[us]"), "int64"), 1e6)
    in_window = pc.and_(pc.greater_equal(produced, start), pc.less_equal(produced, end))
    produced_at = produced.filter(in_window).to_numpy()
    batch = np.array([int(b.rsplit(":", 1)[1]) for b in ticks["ingest_batch"].filter(in_window).to_pylist()])
    tick_commits = tables.batch_commit_times(settings, tables.TICKS)
    bars_commits = tables.batch_commit_times(settings, tables.bars("1m"))
    folded_by: dict[int, int] = {}
    for match in BARS_LINE.finditer(bars_log.read_text(errors="replace")):
        bars_batch, first, last = int(match.group(1)), int(match.group(3)), int(match.group(4))
        for ticks_batch in range(first, last + 1):
            folded_by.setdefault(ticks_batch, bars_batch)

    def latency(commit_of) -> dict:
        committed = np.array([commit_of(b) for b in batch], dtype=float)
        values = committed - produced_at
        values = values[~np.isnan(values)]
        if not len(values):
            return {"p50": None, "p99": None, "n": 0}
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)), "n": int(len(values))}

    return {
        "ticks_in_window": int(len(produced_at)),
        "stored_rate": len(produced_at) / (end - start),
        "lag_start": lags[0][1] if lags else None, "lag_end": lags[-1][1] if lags else None,
        "lag_slope_per_s": slope,
        "lag_flat": slope is not None and slope <= 0.05 * rate,
        "load1_mean": float(np.mean([s["load1"] for s in samples])) if samples else None,
        "cpu_cores": cpu,
        "to_ticks_s": latency(lambda b: tick_commits.get(int(b), np.nan)),
        "to_bars_1m_s": latency(lambda b: bars_commits.get(folded_by.get(int(b), -1), np.nan)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=600_000, help="ticks drained in each capacity run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of B0, B1, ticks")
    parser.add_argument("--max-offsets", type=int, default=50_000, help="maxOffsetsPerTrigger of the capacity runs")
    parser.add_argument("--rates", default="10000,20000,30000,40000,50000,60000", help="open-loop feed rates")
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--step-seconds", type=float, default=60)
    parser.add_argument("--trigger-seconds", type=float, default=1.0)
    parser.add_argument("--shuffle", type=int, default=4, help="spark.sql.shuffle.partitions")
    parser.add_argument("--part", choices=("all", "ingest", "predictions"), default="all")
    parser.add_argument("--quick", action="store_true", help="a smoke run at a small scale (not a measurement)")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--skip-rates", action="store_true")
    parser.add_argument("--without-bars", action="store_true", help="the ticks query alone in the latency steps")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "stream.json")
    predictions = parser.add_argument_group("the predictions part")
    predictions.add_argument("--tick-rate", type=int, default=None,
                             help="ticks/s of the feed (default: one per symbol per second, the index included)")
    predictions.add_argument("--pred-warmup", type=float, default=30, help="seconds of feed before each measured window")
    predictions.add_argument("--pred-seconds", type=float, default=60, help="seconds measured per run")
    predictions.add_argument("--drain", type=float, default=30, help="seconds to wait for a run's last predictions")
    predictions.add_argument("--history-bars", type=int, default=420,
                             help="daily bars per symbol before today (the scorer holds at most 400)")
    predictions.add_argument("--config", type=Path, default=REPO / "experiments" / "daily.yaml",
                             help="the experiment whose features, sequence length and network sizes are served")
    predictions.add_argument("--observers", type=int, default=10, help="WebSocket clients sharing the observed symbols")
    predictions.add_argument("--observed-symbols", type=int, default=500,
                             help="symbols whose ticks are timed, the index included (0: all)")
    predictions.add_argument("--get-rate", type=int, default=1000, help="paced GET one prediction, req/s (0: none)")
    predictions.add_argument("--get-connections", type=int, default=50)
    predictions.add_argument("--seed", type=int, default=3, help="of the synthetic history and feed")
    # One capacity run in its own process (used by the driver).
    parser.add_argument("--drain-kind", choices=("bare", "ticks", "bars"), help=argparse.SUPPRESS)
    parser.add_argument("--drain-home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--drain-master", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain_kind:
        print(json.dumps(spark_drain(args.drain_kind, args.drain_home, args.bootstrap, args.topic, args.max_offsets,
                                     args.shuffle, master=args.drain_master)))
        return 0
    if args.quick:
        args.symbols, args.repeats = 200, 2
        args.backlog, args.max_offsets, args.rates, args.warmup, args.step_seconds = 20_000, 10_000, "1000", 5, 15
        args.pred_warmup, args.pred_seconds, args.drain, args.history_bars, args.observers = 10, 20, 20, 80, 4
        args.observed_symbols = 50

    began = time.monotonic()
    machine = describe_machine(java=True)
    print(f"machine: {machine}", flush=True)
    capacity: list[dict] = []
    steps: list[dict] = []
    predicted: dict | None = None
    if args.part in ("all", "ingest"):
        capacity, steps = run_ingest(args)
    if args.part in ("all", "predictions"):
        import predictions

        predicted = predictions.run(args, machine)
    report(args, machine, capacity, steps, predicted, began)
    return 0


def run_ingest(args) -> tuple[list[dict], list[dict]]:
    """Parts 1 and 2: the capacity rounds and the open-loop rate steps."""
    from scratch import scratch_platform

    from tickcast.catalog.topics import topic_message_count
    from tickcast.platform.processes import TICKCAST, wait_until

    rates = [int(r) for r in args.rates.split(",") if r]
    capacity: list[dict] = []
    steps: list[dict] = []
    env = dict(TICKCAST_INGEST_TRIGGER_SECONDS=str(args.trigger_seconds),
               TICKCAST_SPARK_SHUFFLE_PARTITIONS=str(args.shuffle), TICKCAST_FEAST_PUSH_ENABLED="true")
    with scratch_platform("stream", keep=args.keep, env=env, spark_shuffle_partitions=args.shuffle) as platform:
        settings, bootstrap, scratch, env = platform.settings, platform.bootstrap, platform.dir, platform.env
        run_cli(env, "topics", "create", log=scratch / "setup.log")
        if not args.skip_capacity:
            backlog_topic = "bench-backlog"
            env_backlog = {**env, "TICKCAST_TOPIC_TICKS": backlog_topic}
            run_cli(env_backlog, "topics", "create", log=scratch / "setup.log")
            print(f"producing a backlog of {args.backlog:,} ticks ...", flush=True)
            seconds = max(args.backlog / 100_000, 1)
            run_cli(env_backlog, "produce", "synthetic", "--symbols", str(args.symbols), "--rate",
                    str(int(args.backlog / seconds)), "--seconds", f"{seconds:g}", log=scratch / "setup.log")
            backlog = topic_message_count(bootstrap, backlog_topic)
            for round_ in range(args.repeats):
                b0 = consume_rate(bootstrap, backlog_topic, backlog)
                b1 = spark_subprocess("bare", scratch / f"b1-{round_}", bootstrap, backlog_topic, args)
                hot = spark_subprocess("ticks", scratch / f"ticks-{round_}", bootstrap, backlog_topic, args)
                capacity.append({"b0": b0, "b1": b1, "ticks": hot})
                print(f"  round {round_ + 1}: B0 {b0['rows_per_s']:,.0f}/s, B1 {b1['rows_per_s']:,.0f}/s, "
                      f"ticks {hot['rows_per_s']:,.0f}/s ({hot['rows']:,} rows)", flush=True)

        if not args.skip_rates:
            # As the platform runs them: each query in its own process.
            ingest = platform.start("ingest", "stream", "ingest", "--query", "ticks")
            bars = None if args.without_bars else platform.start("bars", "stream", "ingest", "--query", "bars")
            bars_log = platform.log("bars")
            progress = settings.run_dir / "streaming-progress.json"
            wait_until(progress.exists, timeout=300, what="the ingest queries' first progress report")
            sampler = Sampler(settings, bootstrap, settings.topic_ticks,
                              {"ingest": ingest.pid, **({"bars": bars.pid} if bars else {})})
            sampler.start()
            for rate in rates:
                total = args.warmup + args.step_seconds
                print(f"step {rate:,} ticks/s for {total:.0f} s ...", flush=True)
                started = time.time()
                feed = subprocess.Popen(
                    [TICKCAST, "produce", "synthetic", "--symbols", str(args.symbols), "--rate", str(rate),
                     "--seconds", f"{total:g}", "--seed", str(rate)],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                sampler.processes["feed"] = feed.pid
                output, _ = feed.communicate(timeout=total + 300)
                sampler.processes.pop("feed", None)
                ended = time.time()
                found = FEED_LINE.search(output or "")
                achieved = (int(found.group(1).replace(",", "")) / float(found.group(4))) if found else None
                # Let the last batches of the step land before reading the tables.
                time.sleep(max(args.trigger_seconds * 3, 5))
                figures = step_figures(settings, sampler, bars_log, started + args.warmup, ended, rate)
                figures.update(rate=rate, feed_achieved=achieved,
                               discarded=achieved is None or achieved < 0.98 * rate)
                steps.append(figures)
                print(f"  feed {achieved or 0:,.0f}/s, stored {figures['stored_rate']:,.0f}/s, lag "
                      f"{figures['lag_start']} -> {figures['lag_end']}, ticks p99 "
                      f"{figures['to_ticks_s']['p99']}, bars_1m p99 {figures['to_bars_1m_s']['p99']}", flush=True)
                if not figures["lag_flat"]:
                    print("  lag grows: past the knee, stopping the steps", flush=True)
                    break
                # Drain before the next step so each starts from no lag.
                def drained(rate: int = rate) -> bool:
                    return (sampler.samples[-1]["lag"] or 0) < rate

                wait_until(drained, timeout=600, interval=2, what="the lag to drain")
            sampler.stop()
            platform.stop("ingest", "bars")
    return capacity, steps


def report(args, machine: str, capacity: list[dict], steps: list[dict], predicted: dict | None,
           began: float) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, run took {(time.monotonic() - began) / 60:.1f} min"
    summary: dict = {}
    if capacity:
        table = Table(title="bench/stream capacity: draining one backlog, interleaved B0 / B1 / ticks")
        for column in ("round", "B0 bare consumer (msg/s)", "B1 bare Spark Kafka->Delta (rows/s)",
                       "ticks query (rows/s)", "ticks / B1"):
            table.add_column(column, justify="right")
        for i, r in enumerate(capacity, 1):
            table.add_row(str(i), f"{r['b0']['rows_per_s']:,.0f}", f"{r['b1']['rows_per_s']:,.0f}",
                          f"{r['ticks']['rows_per_s']:,.0f}", f"{r['ticks']['rows_per_s'] / r['b1']['rows_per_s']:.2f}")
        medians = {k: float(np.median([r[k]["rows_per_s"] for r in capacity])) for k in ("b0", "b1", "ticks")}
        summary["capacity_median_rows_per_s"] = medians
        summary["ticks_over_b1"] = medians["ticks"] / medians["b1"]
        table.add_row("median", f"{medians['b0']:,.0f}", f"{medians['b1']:,.0f}", f"{medians['ticks']:,.0f}",
                      f"{summary['ticks_over_b1']:.2f}")
        table.caption = (f"conditions: backlog of {args.backlog:,} synthetic ticks of {args.symbols:,} symbols on "
                         f"4 partitions, {args.max_offsets:,} offsets per micro-batch, Spark local[*], "
                         f"{args.shuffle} shuffle partitions; rows/s over the batches' own durations, the first "
                         f"left out\nmachine: {machine}\n{stamp}")
        console.print(table)
    if steps:
        table = Table(title="bench/stream latency: `tickcast stream ingest` at open-loop rates")
        for column in ("feed target / reached (ticks/s)", "stored (ticks/s)", "lag start -> end (slope/s)",
                       "produced -> in ticks p50 / p99 (s)", "produced -> in bars_1m p50 / p99 (s)",
                       "load avg", "CPU cores: ticks, bars, feed"):
            table.add_column(column, justify="right")

        def pair(d: dict) -> str:
            return "-" if d["p50"] is None else f"{d['p50']:.2f} / {d['p99']:.2f}"

        for s in steps:
            table.add_row(
                f"{s['rate']:,} / {s['feed_achieved'] or 0:,.0f}{' (discarded)' if s['discarded'] else ''}",
                f"{s['stored_rate']:,.0f}", f"{s['lag_start']} -> {s['lag_end']} ({s['lag_slope_per_s'] or 0:,.0f})",
                pair(s["to_ticks_s"]), pair(s["to_bars_1m_s"]), f"{s['load1_mean'] or 0:.2f}",
                ", ".join(f"{s['cpu_cores'].get(k, float('nan')):.2f}" for k in ("ingest", "bars", "feed")))
        flat = [s for s in steps if s["lag_flat"] and not s["discarded"]]
        summary["knee_ticks_per_s"] = max((s["rate"] for s in flat), default=None)
        table.caption = (f"conditions: {args.symbols:,} symbols, synthetic feed, {args.warmup:g} s warm-up + "
                         f"{args.step_seconds:g} s measured per step, ticks trigger {args.trigger_seconds:g} s, "
                         f"bars trigger 2 s, Spark local[*], one broker, 4 partitions; knee (highest rate with flat "
                         f"lag): {summary['knee_ticks_per_s']}\nmachine: {machine}\n{stamp}")
        console.print(table)
    if predicted is not None:
        import predictions

        predictions.report(args, machine, predicted, console)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine, "part": args.part, "quick": args.quick,
                                       "capacity": capacity, "steps": steps, "predictions": predicted, **summary},
                                      indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
