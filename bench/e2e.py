"""Benchmark: tick to prediction, end to end - from a tick's ``produced_at`` to the API
serving a prediction that includes it.

    .venv/bin/python bench/e2e.py [--symbols 5000] [--rate 5000] [--warmup 60] [--seconds 120]

Everything is real and runs in its own processes on a scratch TICKCAST_HOME: a Kafka broker
(KRaft, from Kafka's jars), `tickcast stream ingest` (Spark ``local[*]``), the live scorer
(`tickcast stream score`), `tickcast serve api` (uvicorn, one worker) and `tickcast produce
synthetic`.

1. Setup (not timed): a daily history of ``--history-bars`` weekdays ending yesterday for
   the market index and ``--symbols`` symbols (`tickcast history synthetic`, the same seed as
   the live feed, so the same universe), its features (`tickcast features backfill`), and a
   champion LSTM + Transformer registered in MLflow with the architecture and inputs of
   ``--config`` (random weights: the time to score does not depend on them).
2. The feed: `tickcast produce synthetic --symbols N --rate R` for ``--warmup`` +
   ``--seconds`` seconds (R / N ticks per symbol per second on average; the index and the
   liquid names print more often, as in the synthetic market).
3. The observer: ``--observers`` WebSocket clients of ``/ws/predictions`` in this process,
   each subscribed to a share of the symbols, record when each prediction arrives and its
   ``data_timestamp`` (the event time of the newest tick behind it). The API pushes a
   prediction in the same step that makes it visible to ``GET /api/v1/predictions``.
4. Afterwards, every tick stored in Delta ``ticks`` whose ``produced_at`` falls in the
   measured window is matched to the first prediction of its symbol with ``data_timestamp``
   at or after the tick's ``ts``; latency = that arrival - ``produced_at``. Ticks never
   covered before the end are counted, not dropped. The ``ticks`` query's log gives its
   micro-batch durations and where each batch's time went.

Prints a table with the conditions and the machine, and writes bench/results/e2e.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark

SCORER_LINE = re.compile(r"last \d+s: (\d+) ticks folded, (\d+) cycles, (\d+) predictions; seconds spent ([^;]*);")
SPENT_PART = re.compile(r"([a-zA-Z+ ]+?) ([\d.]+)(?:, |$)")
BATCH_LINE = re.compile(r"ticks batch (\d+): (\d+) stored, (\d+) quarantined in ([\d.]+)s \((.*)\)")


class Observer:
    """WebSocket clients that note (arrival, symbol, data_timestamp) of every prediction."""

    def __init__(self, url: str, key: str, symbols: list[str], clients: int):
        self.url, self.key = url, key
        self.shares = [symbols[i::clients] for i in range(clients)]
        self.seen: list[tuple[float, bytes]] = []  # (arrival epoch s, raw message) - parsed at the end
        self.errors: list[str] = []
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(120):
            raise RuntimeError(f"the WebSocket observers did not connect: {self.errors[:3]}")

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _client(self, share: list[str], connected: list[int]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        record, now = self.seen.append, time.time
        try:
            async with connect(self.url, additional_headers={"X-API-Key": self.key}, max_queue=None,
                               open_timeout=60) as ws:
                await ws.send(json.dumps({"action": "subscribe", "symbols": share}))
                connected.append(1)
                if len(connected) == len(self.shares):
                    self.ready.set()
                while True:
                    raw = await ws.recv(decode=False)
                    record((now(), raw))
        except ConnectionClosed as exc:
            if not self._stop.is_set():
                self.errors.append(f"closed: {exc}")
        except (OSError, TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connected: list[int] = []
        tasks = [asyncio.create_task(self._client(share, connected)) for share in self.shares]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def frame(self):
        """One row per prediction received: arrival, symbol, data_timestamp, predicted_at."""
        import orjson
        import pandas as pd

        rows = []
        for arrival, raw in self.seen:
            message = orjson.loads(raw)
            if message.get("type") == "prediction_update":
                p = message["prediction"]
                rows.append((arrival, p["symbol"], p["data_timestamp"], p["predicted_at"], p["model_version"]))
        frame = pd.DataFrame(rows, columns=["arrival", "symbol", "data_timestamp", "predicted_at", "model_version"])
        for column in ("data_timestamp", "predicted_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
        frame["arrival"] = pd.to_datetime(frame["arrival"], unit="s", utc=True).astype("datetime64[ns, UTC]")
        return frame


def weekdays_back(last: date, count: int) -> date:
    """The first of ``count`` weekdays ending on ``last`` (or the weekday before it)."""
    day, left = last, count
    while True:
        if day.weekday() < 5:
            left -= 1
            if left == 0:
                return day
        day -= timedelta(days=1)


def run_cli(env: dict[str, str], *args: str, log: Path) -> None:
    from tickcast.platform.processes import TICKCAST

    started = time.monotonic()
    with log.open("a") as out:
        done = subprocess.run([TICKCAST, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"tickcast {' '.join(args)} exited {done.returncode}; see {log}")
    print(f"  tickcast {' '.join(args)}: {time.monotonic() - started:.0f} s", flush=True)


def batch_steps(log_path: Path) -> list[dict]:
    """The ``ticks`` query's micro-batches from its log lines: rows, seconds, where they went."""
    batches = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = BATCH_LINE.search(line)
        if match:
            steps = {}
            for part in match.group(5).split(", "):
                name, _, seconds = part.rpartition(" ")
                steps[name] = float(seconds.rstrip("s"))
            batches.append({"batch": int(match.group(1)), "stored": int(match.group(2)),
                            "quarantined": int(match.group(3)), "seconds": float(match.group(4)), "steps": steps})
    return batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000, help="symbols besides the market index")
    parser.add_argument("--rate", type=int, default=5000, help="ticks/s of the whole feed")
    parser.add_argument("--warmup", type=float, default=60, help="seconds of feed before the measured window")
    parser.add_argument("--seconds", type=float, default=120, help="seconds of feed measured")
    parser.add_argument("--drain", type=float, default=300, help="seconds to wait for the last predictions")
    parser.add_argument("--history-bars", type=int, default=420,
                        help="daily bars per symbol before today (the scorer holds at most 400)")
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "daily.yaml",
                        help="the experiment whose features, sequence length and network sizes are served")
    parser.add_argument("--observers", type=int, default=25, help="WebSocket clients sharing the symbols")
    parser.add_argument("--trigger-seconds", type=float, default=1.0, help="the stream's micro-batch interval")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "e2e.json")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from tickcast.auth.apikeys import ApiKeyStore
    from tickcast.catalog.tables import delta_rows
    from tickcast.core.settings import Settings
    from tickcast.models.experiment import load_config
    from tickcast.models.untrained import quick_bundles, register_bundles
    from tickcast.platform.broker import running_broker
    from tickcast.platform.jars import ensure_jars
    from tickcast.platform.processes import TICKCAST, free_port, stop_process, wait_for_port, wait_until

    began = time.monotonic()
    machine = describe_machine(java=True)
    print(f"machine: {machine}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="tickcast-bench-e2e-"))
    settings = Settings(home=scratch / "home")
    ensure_jars(settings)
    config = load_config(args.config)
    universe = args.symbols + 1  # the synthetic market's symbol 0 is the index
    symbols = [settings.market_index_symbol] + [f"S{i:04d}" for i in range(1, universe)]
    setup_log, ingest_log, api_log = scratch / "setup.log", scratch / "ingest.log", scratch / "api.log"
    scorer_log = scratch / "scorer.log"
    print(f"scratch home {scratch}", flush=True)
    processes: list[subprocess.Popen] = []
    observer: Observer | None = None
    try:
        with running_broker(settings, scratch / "kafka") as bootstrap:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
            env.update(TICKCAST_HOME=str(settings.home_dir), TICKCAST_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                       TICKCAST_INGEST_TRIGGER_SECONDS=str(args.trigger_seconds),
                       TICKCAST_SCORER_INTERVAL=config.interval)
            print("setup (not timed):", flush=True)
            run_cli(env, "topics", "create", log=setup_log)
            yesterday = datetime.now(UTC).date() - timedelta(days=1)
            first_day = weekdays_back(yesterday, args.history_bars)
            run_cli(env, "history", "synthetic", "--interval", config.interval, "--symbols", str(universe),
                    "--bars", str(args.history_bars), "--start", first_day.isoformat(), "--seed", str(args.seed),
                    log=setup_log)
            run_cli(env, "features", "backfill", "--interval", config.interval, log=setup_log)
            bundles = quick_bundles(scratch / "bundles", features=config.features,
                                    sequence_length=config.training.sequence_length, interval=config.interval,
                                    lstm=config.lstm.model_dump(), transformer=config.transformer.model_dump())
            versions = register_bundles(settings, bundles, interval=config.interval)
            print(f"  champions registered: {versions}", flush=True)
            _, key = ApiKeyStore(settings.api_keys_path).create("bench-e2e", ["read"], rate_limit="1000000/second")

            port = free_port()
            # As the platform runs them: the ticks and bars queries each in a process of its own.
            with ingest_log.open("w") as out:
                processes.append(subprocess.Popen([TICKCAST, "stream", "ingest", "--query", "ticks"], env=env,
                                                  stdout=out, stderr=subprocess.STDOUT, process_group=0))
            with (scratch / "bars.log").open("w") as out:
                processes.append(subprocess.Popen([TICKCAST, "stream", "ingest", "--query", "bars"], env=env,
                                                  stdout=out, stderr=subprocess.STDOUT, process_group=0))
            with api_log.open("w") as out:
                api = subprocess.Popen([TICKCAST, "serve", "api", "--port", str(port)], env=env,
                                       stdout=out, stderr=subprocess.STDOUT, process_group=0)
                processes.append(api)
            with scorer_log.open("w") as out:
                processes.append(subprocess.Popen([TICKCAST, "stream", "score"], env=env, stdout=out,
                                                  stderr=subprocess.STDOUT, process_group=0))
            wait_until(lambda: "live scorer running" in scorer_log.read_text(errors="replace"), timeout=300,
                       what="the live scorer to load its state")
            wait_for_port(port, timeout=120, proc=api)
            progress = settings.run_dir / "streaming-progress.json"
            wait_until(progress.exists, timeout=300, what="the ingest query's first progress report")
            observer = Observer(f"ws://127.0.0.1:{port}/ws/predictions", key, symbols, args.observers)
            observer.start()

            total = args.warmup + args.seconds
            print(f"feeding {universe:,} symbols at {args.rate:,} ticks/s for {total:.0f} s "
                  f"({args.warmup:.0f} s warm-up) ...", flush=True)
            feed_started = datetime.now(UTC)
            with (scratch / "producer.log").open("w") as out:
                subprocess.run([TICKCAST, "produce", "synthetic", "--symbols", str(universe), "--rate",
                                str(args.rate), "--seconds", str(total), "--seed", str(args.seed)],
                               env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
            feed_ended = datetime.now(UTC)
            window_start = pd.Timestamp(feed_started + timedelta(seconds=args.warmup))
            print(f"feed done; waiting up to {args.drain:.0f} s for the last predictions ...", flush=True)

            def newest_served() -> pd.Timestamp | None:
                served = [json.loads(raw).get("prediction", {}).get("data_timestamp") for _, raw in observer.seen[-50:]]
                stamps = [pd.Timestamp(s) for s in served if s]
                return max(stamps) if stamps else None

            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                newest = newest_served()
                if newest is not None and newest >= pd.Timestamp(feed_ended) - pd.Timedelta(seconds=2):
                    time.sleep(5)  # the last batch's predictions are still arriving
                    break
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"a service exited; see {ingest_log}, {scorer_log} and {api_log}")
                time.sleep(1)
            observer.stop()
            for proc in processes:
                stop_process(proc, timeout=120)

        served = observer.frame()
        ticks = delta_rows(settings, "ticks", ["symbol", "ts", "produced_at"]).to_pandas()
        quarantined = delta_rows(settings, "quarantine", ["reason"])
        for column in ("ts", "produced_at"):
            ticks[column] = pd.to_datetime(ticks[column], utc=True).astype("datetime64[ns, UTC]")
        measured = ticks[(ticks["produced_at"] >= window_start) & (ticks["produced_at"] <= pd.Timestamp(feed_ended))]
        first = (served.sort_values("arrival").groupby(["symbol", "data_timestamp"], as_index=False).first()
                 .sort_values("data_timestamp"))
        matched = pd.merge_asof(measured.sort_values("ts"), first, left_on="ts", right_on="data_timestamp",
                                by="symbol", direction="forward")
        covered = matched.dropna(subset=["arrival"])
        latency = (covered["arrival"] - covered["produced_at"]).dt.total_seconds().to_numpy()
        to_scored = (covered["predicted_at"] - covered["produced_at"]).dt.total_seconds().to_numpy()
        to_served = (covered["arrival"] - covered["predicted_at"]).dt.total_seconds().to_numpy()
        batches = batch_steps(ingest_log)
        in_window = [b for b in batches if b["stored"] > 0][1:]  # the first batch pays the imports and JIT
        step_names = list(dict.fromkeys(name for b in in_window for name in b["steps"]))
        mean_steps = {n: float(np.mean([b["steps"].get(n, 0.0) for b in in_window])) for n in step_names}

        lines = list(SCORER_LINE.finditer(scorer_log.read_text(errors="replace"))) if scorer_log.exists() else []
        cycles = [tuple(map(int, m.groups()[:3])) for m in lines]
        spent: dict[str, float] = {}
        for m in lines:
            for part, seconds in SPENT_PART.findall(m.group(4)):
                spent[part.strip()] = spent.get(part.strip(), 0.0) + float(seconds)
        cycle_stats = {"minutes": len(cycles), "ticks_folded": sum(c[0] for c in cycles),
                       "cycles": sum(c[1] for c in cycles), "predictions": sum(c[2] for c in cycles),
                       "seconds_spent": spent}

        def pct(values: np.ndarray, q: float) -> float | None:
            return float(np.percentile(values, q)) if len(values) else None

        figures = {
            "ticks_measured": int(len(measured)), "ticks_covered": int(len(covered)),
            "ticks_uncovered": int(len(measured) - len(covered)),
            "ticks_stored": int(len(ticks)), "quarantined": 0 if quarantined is None else quarantined.num_rows,
            "predictions_received": int(len(served)),
            "latency_s": {"p50": pct(latency, 50), "p99": pct(latency, 99), "max": pct(latency, 100)},
            "produced_to_scored_s": {"p50": pct(to_scored, 50), "p99": pct(to_scored, 99)},
            "scored_to_served_s": {"p50": pct(to_served, 50), "p99": pct(to_served, 99)},
            "batches": len(batches), "batch_seconds_mean": float(np.mean([b["seconds"] for b in in_window]))
            if in_window else None, "batch_steps_mean_s": mean_steps,
            "observer_errors": observer.errors[:5], "live_cycles": cycle_stats,
        }
    finally:
        if observer is not None:
            observer.stop()
        for proc in processes:
            if proc.poll() is None:
                stop_process(proc)
        if args.keep:
            print(f"scratch home and logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    from rich.console import Console
    from rich.table import Table

    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    lat = figures["latency_s"]
    table = Table(title="bench/e2e: tick produced -> prediction served by the API")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("tick produced_at -> API serves a prediction that includes it: p50 / p99 / max (target p99 <= 1 s)",
                  f"{s(lat['p50'])} / {s(lat['p99'])} / {s(lat['max'])}")
    table.add_row("  of which produced_at -> predicted_at (scoring): p50 / p99",
                  f"{s(figures['produced_to_scored_s']['p50'])} / {s(figures['produced_to_scored_s']['p99'])}")
    table.add_row("  of which predicted_at -> pushed by the API: p50 / p99",
                  f"{s(figures['scored_to_served_s']['p50'])} / {s(figures['scored_to_served_s']['p99'])}")
    table.add_row("ticks in the measured window: covered / not covered by the end",
                  f"{figures['ticks_covered']:,} / {figures['ticks_uncovered']:,}")
    table.add_row("ticks stored / quarantined (whole run)", f"{figures['ticks_stored']:,} / {figures['quarantined']:,}")
    table.add_row("ticks query: micro-batches; mean duration after the first",
                  f"{figures['batches']}; {s(figures['batch_seconds_mean'])}")
    table.add_row("ticks query: mean batch step times", ", ".join(f"{k} {v:.2f}" for k, v in mean_steps.items()))
    live = figures["live_cycles"]
    if live["cycles"]:
        per_cycle = {part: seconds / live["cycles"] for part, seconds in live["seconds_spent"].items()}
        table.add_row("live scorer: cycles, mean predictions per cycle",
                      f"{live['cycles']:,}, {live['predictions'] / live['cycles']:,.0f}")
        table.add_row("live scorer: mean seconds per cycle spent on",
                      ", ".join(f"{part} {seconds:.2f}" for part, seconds in per_cycle.items()))
    conditions = (
        f"{args.symbols:,} symbols + the index, synthetic feed at {args.rate:,} ticks/s "
        f"({args.rate / universe:.2f} per symbol per s on average) for {args.warmup:.0f} s warm-up + "
        f"{args.seconds:.0f} s measured; {args.history_bars} daily bars of history; champion models with "
        f"{args.config.name}'s inputs ({config.training.sequence_length} bars x {len(config.features)} features) "
        "and sizes; scored by the live scorer; "
        f"Spark local[*], trigger {args.trigger_seconds:g} s, one broker; the API observed through "
        f"{args.observers} WebSocket clients on loopback")
    table.caption = (f"conditions: {conditions}\nmachine: {machine}\n"
                     f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, run took {(time.monotonic() - began) / 60:.1f} min")
    Console(width=200).print(table)
    if figures["observer_errors"]:
        print(f"observer errors: {figures['observer_errors']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"conditions": conditions, "machine": machine, **figures}, indent=2,
                                      default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
