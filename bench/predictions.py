"""The predictions part of `make bench-stream` (``bench/stream.py --part predictions``): from a
tick produced to the API serving a prediction that includes it, and GET one prediction under
load, while the ingest runs - each beside a baseline measured in the same run.

Everything is real and in its own process on a scratch TICKCAST_HOME: a Kafka broker (KRaft),
`tickcast stream ingest --query ticks` and `--query bars` (as the platform runs them),
`tickcast serve api` (one uvicorn worker, following the ``predictions`` topic), the synthetic
feed, WebSocket observers in this process, and the paced GET load of bench/api.py (autocannon's
client in node).

1. Setup, not timed: a daily history of ``--history-bars`` weekdays ending yesterday for the
   index and the symbols (`tickcast history synthetic`, the feed's seed, so the same universe),
   its features (`tickcast features backfill`), and a champion LSTM + Transformer registered in
   MLflow with the inputs and sizes of ``--config`` and untrained weights
   (tickcast/models/untrained.py; the time to score does not depend on the weights).
2. Runs, interleaved A/B/A/B (``--repeats`` of each): A is the baseline, bench/echo_scorer.py
   (consume the ticks, one trivial prediction per symbol per poll, published through the same
   online store + ``predictions`` topic + Delta path); B is the live scorer, `tickcast stream
   score` (folds, features, both champion models), started afresh each run (its checkpoint
   and committed offsets moved to the end of the topic, so it does not replay the ticks of the
   run before). Each run: the feed at ``--tick-rate`` ticks/s (default one per symbol per
   second) for ``--pred-warmup`` + ``--pred-seconds`` s; during the measured part, GET
   /api/v1/predictions/{symbol} at a paced ``--get-rate`` req/s rotating through the symbols.
3. Latency: every tick of an observed symbol (``--observed-symbols``: the index and evenly
   spaced symbols, a sample, so that the instrument does not load the API with a push per
   prediction) produced in the measured window (read back from the ``ticks`` topic by offsets)
   is matched to the first prediction of its symbol that a WebSocket observer received with
   ``data_timestamp`` at or after the tick's ``ts``; latency = that arrival -
   the tick's ``produced_at``. The API pushes a prediction in the same step that makes it
   visible to GET. Ticks not covered by the end of the drain are counted, not dropped.
   Where it goes: ``predicted_at`` is stamped when the scorer starts scoring (so predicted_at ->
   served includes the models and the writes); the message's timestamp on the ``predictions``
   topic is when the scorer handed it to Kafka, so from there to the push is the API's own share
   (the broker, the API's consumer, applying, the fan-out and the WebSocket send).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VARIANTS = {"echo": "echo scorer (baseline)", "scorer": "live scorer"}
READY = {"echo": "echo scorer running", "scorer": "live scorer running"}
TARGET_SERVED_P99_S = 1.0
TARGET_GET_P99_MS = 5.0


class Observer:
    """WebSocket clients that note (arrival, raw message) of every prediction pushed to them."""

    def __init__(self, url: str, key: str, symbols: list[str], clients: int):
        self.url, self.key = url, key
        self.shares = [symbols[i::clients] for i in range(clients)]
        self.seen: list[tuple[float, bytes]] = []
        self.errors: list[str] = []
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="observer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(120) or self.errors:
            raise RuntimeError(f"the WebSocket observers did not connect: {self.errors[:3]}")

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def take(self) -> list[tuple[float, bytes]]:
        """What arrived since the last call (the clients append to the new list from now on)."""
        taken, self.seen = self.seen, []
        return taken

    def newest_data_timestamp(self) -> str | None:
        import orjson

        stamps = [orjson.loads(raw).get("prediction", {}).get("data_timestamp") for _, raw in self.seen[-50:]]
        stamps = [s for s in stamps if s]
        return max(stamps) if stamps else None

    async def _client(self, share: list[str], connected: list[int]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        now = time.time
        try:
            async with connect(self.url, additional_headers={"X-API-Key": self.key}, max_queue=None,
                               open_timeout=60) as ws:
                await ws.send(json.dumps({"action": "subscribe", "symbols": share}))
                connected.append(1)
                if len(connected) == len(self.shares):
                    self.ready.set()
                while True:
                    raw = await ws.recv(decode=False)
                    self.seen.append((now(), raw))  # looked up each time: take() swaps the list
        except ConnectionClosed as exc:
            if self._stop is not None and not self._stop.is_set():
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


def served_frame(seen: list[tuple[float, bytes]]):
    """One row per prediction received: arrival, symbol, data_timestamp, predicted_at (UTC, ns)."""
    import orjson
    import pandas as pd

    rows = []
    for arrival, raw in seen:
        message = orjson.loads(raw)
        if message.get("type") == "prediction_update":
            p = message["prediction"]
            rows.append((arrival, p["symbol"], p["data_timestamp"], p["predicted_at"]))
    frame = pd.DataFrame(rows, columns=["arrival", "symbol", "data_timestamp", "predicted_at"])
    for column in ("data_timestamp", "predicted_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    frame["arrival"] = pd.to_datetime(frame["arrival"], unit="s", utc=True).astype("datetime64[ns, UTC]")
    return frame


def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of each partition of ``topic``."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ends-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int], row) -> list[tuple]:
    """``row(message)`` of every message between two sets of offsets (read after the fact)."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    wanted = {p: (start.get(p, 0), end[p]) for p in end if end[p] > start.get(p, 0)}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in wanted.items()])
    rows, left = [], dict(wanted)
    deadline = time.monotonic() + 300
    try:
        while left and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=1.0):
                if message.error() is not None:
                    continue
                p = message.partition()
                if p in left and message.offset() < left[p][1]:
                    rows.append(row(message))
                    if message.offset() + 1 >= left[p][1]:
                        del left[p]
    finally:
        consumer.close()
    return rows


def _utc(frame, *columns: str):
    import pandas as pd

    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    return frame


def read_ticks(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int]):
    """symbol, ts, produced_at of the ticks between two sets of offsets, from the topic itself."""
    import orjson
    import pandas as pd

    def row(message) -> tuple:
        tick = orjson.loads(message.value())
        return tick["symbol"], tick["ts"], tick["produced_at"]

    return _utc(pd.DataFrame(read_topic(bootstrap, topic, start, end, row),
                             columns=["symbol", "ts", "produced_at"]), "ts", "produced_at")


def read_published(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int]):
    """symbol, data_timestamp, predicted_at of the predictions published between two sets of
    offsets, and ``published``: the message's timestamp (set by the producer, in ms)."""
    import orjson
    import pandas as pd

    def row(message) -> tuple:
        p = orjson.loads(message.value())
        return p["symbol"], p["data_timestamp"], p["predicted_at"], message.timestamp()[1]

    frame = _utc(pd.DataFrame(read_topic(bootstrap, topic, start, end, row),
                              columns=["symbol", "data_timestamp", "predicted_at", "published"]),
                 "data_timestamp", "predicted_at")
    frame["published"] = pd.to_datetime(frame["published"], unit="ms", utc=True).astype("datetime64[ns, UTC]")
    return frame.drop_duplicates(["symbol", "data_timestamp", "predicted_at"])


def restart_scorer_at_the_end(settings, bootstrap: str) -> None:
    """Drop the live scorer's checkpoint and commit its group's offsets at the end of ``ticks``:
    its next start reads no backlog (the ticks of the run before), as a first start would."""
    from confluent_kafka import Consumer, TopicPartition

    from tickcast.scoring.live_job import CONSUMER_GROUP, checkpoint_path

    checkpoint_path(settings).unlink(missing_ok=True)
    ends = topic_ends(bootstrap, settings.topic_ticks)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": CONSUMER_GROUP, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(settings.topic_ticks, p, o) for p, o in ends.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def paced_get(base: str, key: str, symbols: int, *, rate: int, connections: int, duration: float,
              scratch: Path) -> dict:
    """GET /api/v1/predictions/S0001.. at evenly paced times (bench/api.py's paced client)."""
    from api import PACED_JS, _node_env

    script = scratch / "paced.js"
    if not script.exists():
        script.write_text(PACED_JS)
    config = {"url": base, "path": "/api/v1/predictions/", "symbols": symbols, "connections": connections,
              "duration": duration, "rate": rate, "headers": {"X-API-Key": key}}
    done = subprocess.run(["node", str(script), json.dumps(config)], capture_output=True, text=True,
                          timeout=duration + 120, env=_node_env(), check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class Cpu:
    """CPU seconds of named process trees, between two marks."""

    def __init__(self, processes: dict[str, int]):
        self.processes = processes

    def sample(self) -> tuple[float, dict[str, float]]:
        import psutil

        seconds = {}
        for name, pid in self.processes.items():
            try:
                root = psutil.Process(pid)
                seconds[name] = sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                seconds[name] = float("nan")
        return time.monotonic(), seconds

    @staticmethod
    def cores(first: tuple[float, dict[str, float]], last: tuple[float, dict[str, float]]) -> dict[str, float]:
        wall = max(last[0] - first[0], 1e-9)
        return {name: (last[1].get(name, float("nan")) - value) / wall for name, value in first[1].items()}


def observed_symbols(symbols: list[str], count: int) -> list[str]:
    """The index and evenly spaced symbols, ``count`` in all (every symbol for 0 or more)."""
    if count <= 0 or count >= len(symbols):
        return list(symbols)
    step = (len(symbols) - 1) / (count - 1) if count > 1 else len(symbols)
    return sorted({symbols[0], *(symbols[min(len(symbols) - 1, round(1 + i * step))] for i in range(count - 1))})


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def seed_store(settings, symbols: list[str]) -> None:
    """A prediction of every symbol in the online store, a day old, before the API starts: each
    GET finds one from the first run on (a symbol the feed has not ticked yet would be a 404,
    logged), and the first prediction of either scorer replaces it."""
    import pandas as pd
    from api import prediction_frame

    from tickcast.catalog.online import open_online_store

    day_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)
    frame = prediction_frame(symbols, day_ago, day_ago)
    frame["model_name"], frame["model_version"] = "bench-seed", "0"
    open_online_store(settings).upsert_frame(frame)


def weekdays_back(last: date, count: int) -> date:
    """The first of ``count`` weekdays ending on ``last`` (or the weekday before it)."""
    day, left = last, count
    while True:
        if day.weekday() < 5:
            left -= 1
            if left == 0:
                return day
        day -= timedelta(days=1)


def cli(env: dict[str, str], *args: str, log: Path) -> None:
    from tickcast.platform.processes import TICKCAST

    started = time.monotonic()
    with log.open("a") as out:
        done = subprocess.run([TICKCAST, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"tickcast {' '.join(args)} exited {done.returncode}; see {log}")
    print(f"  tickcast {' '.join(args)}: {time.monotonic() - started:.0f} s", flush=True)


def match(ticks, served, published) -> dict:
    """Per tick: the first prediction of its symbol received with data_timestamp >= its ts."""
    import numpy as np
    import pandas as pd

    first = (served.sort_values("arrival").groupby(["symbol", "data_timestamp"], as_index=False).first()
             .sort_values("data_timestamp"))
    matched = pd.merge_asof(ticks.sort_values("ts"), first, left_on="ts", right_on="data_timestamp",
                            by="symbol", direction="forward")
    covered = matched.dropna(subset=["arrival"])
    latency = (covered["arrival"] - covered["produced_at"]).dt.total_seconds().to_numpy()
    to_scored = (covered["predicted_at"] - covered["produced_at"]).dt.total_seconds().to_numpy()
    to_served = (covered["arrival"] - covered["predicted_at"]).dt.total_seconds().to_numpy()
    # The API's own share: from the message's timestamp on the predictions topic to the push.
    on_topic = covered.merge(published, on=["symbol", "data_timestamp", "predicted_at"], how="inner")
    to_topic = (on_topic["published"] - on_topic["produced_at"]).dt.total_seconds().to_numpy()
    from_topic = (on_topic["arrival"] - on_topic["published"]).dt.total_seconds().to_numpy()

    def pct(values: np.ndarray) -> dict:
        if not len(values):
            return {"p50": None, "p99": None, "max": None}
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "max": float(values.max())}

    return {"ticks": int(len(ticks)), "covered": int(len(covered)), "uncovered": int(len(ticks) - len(covered)),
            "predictions_received": int(len(served)), "served_s": pct(latency), "to_predicted_at_s": pct(to_scored),
            "predicted_at_to_served_s": pct(to_served), "to_published_s": pct(to_topic),
            "published_to_served_s": pct(from_topic), "matched_on_topic": int(len(on_topic))}


def run(args, machine: str) -> dict:
    """Set up, run the interleaved A/B rounds, and return the figures (``report`` prints them)."""
    import httpx
    from scratch import scratch_platform

    from tickcast.auth.apikeys import ApiKeyStore
    from tickcast.models.experiment import load_config
    from tickcast.models.untrained import quick_bundles, register_bundles
    from tickcast.platform.processes import free_port, wait_for_port, wait_until

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # building the untrained bundles imports TensorFlow
    began = time.monotonic()
    config = load_config(args.config)
    universe = args.symbols + 1  # the synthetic market's symbol 0 is the index
    rate = args.tick_rate or universe
    runs: list[dict] = []
    env = dict(TICKCAST_INGEST_TRIGGER_SECONDS=str(args.trigger_seconds),
               TICKCAST_SPARK_SHUFFLE_PARTITIONS=str(args.shuffle), TICKCAST_SCORER_INTERVAL=config.interval)
    with scratch_platform("predictions", keep=args.keep, env=env) as platform:
        settings = platform.settings.model_copy(update={"scorer_interval": config.interval})
        scratch, bootstrap, env = platform.dir, platform.bootstrap, platform.env
        symbols = [settings.market_index_symbol] + [f"S{i:04d}" for i in range(1, universe)]
        setup_log, api_log = scratch / "setup.log", platform.log("api")
        print("predictions setup (not timed):", flush=True)
        cli(env, "topics", "create", log=setup_log)
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        cli(env, "history", "synthetic", "--interval", config.interval, "--symbols", str(universe),
            "--bars", str(args.history_bars), "--start", weekdays_back(yesterday, args.history_bars).isoformat(),
            "--seed", str(args.seed), log=setup_log)
        cli(env, "features", "backfill", "--interval", config.interval, log=setup_log)
        bundles = quick_bundles(scratch / "bundles", features=config.features,
                                sequence_length=config.training.sequence_length, interval=config.interval,
                                lstm=config.lstm.model_dump(), transformer=config.transformer.model_dump())
        print(f"  champions registered (untrained): {register_bundles(settings, bundles, interval=config.interval)}",
              flush=True)
        _, key = ApiKeyStore(settings.api_keys_path).create("bench-stream", ["read"], rate_limit="1000000/second")
        seed_store(settings, symbols)

        # As the platform runs them: the two ingest queries in processes of their own (niced
        # by themselves), the API in its own.
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        platform.start("ticks", "stream", "ingest", "--query", "ticks")
        platform.start("bars", "stream", "ingest", "--query", "bars")
        api = platform.start("api", "serve", "api", "--port", str(port))
        services = dict(platform.procs)
        wait_for_port(port, timeout=120, proc=api)
        wait_until(lambda: "following Kafka topic" in api_log.read_text(errors="replace"), timeout=120,
                   what="the API to follow the predictions topic")
        progress = settings.run_dir / "streaming-progress.json"
        wait_until(progress.exists, timeout=300, what="the ingest query's first progress report")
        observed = observed_symbols(symbols, args.observed_symbols)
        observer = Observer(f"ws://127.0.0.1:{port}/ws/predictions", key, observed, args.observers)
        observer.start()
        print(f"predictions runs: {args.repeats} x (A = echo scorer, B = live scorer), {universe:,} symbols "
              f"at {rate:,} ticks/s, {args.pred_warmup:g} s warm-up + {args.pred_seconds:g} s measured each",
              flush=True)
        try:
            for round_ in range(args.repeats):
                for variant in VARIANTS:
                    if variant == "scorer":
                        restart_scorer_at_the_end(settings, bootstrap)
                    name = f"{variant}-{round_ + 1}"
                    scorer = (platform.start(name, program=[sys.executable, str(BENCH / "echo_scorer.py")])
                              if variant == "echo" else platform.start(name, "stream", "score"))
                    try:
                        wait_until(lambda log=platform.log(name), variant=variant:
                                   READY[variant] in log.read_text(errors="replace"),
                                   timeout=600, what=f"the {VARIANTS[variant]} to start", interval=0.5)
                        result = one_run(args, settings, bootstrap, env, observer, set(observed), scorer, services,
                                         base, key, universe, rate, scratch)
                    finally:
                        platform.stop(name)
                    dead = platform.exited()
                    if dead:
                        raise RuntimeError(f"{', '.join(dead)} exited; see the logs in {scratch} (--keep)")
                    result.update(round=round_ + 1, variant=variant)
                    runs.append(result)
                    served, get = result["served_s"], result.get("get") or {}
                    print(f"  round {round_ + 1} {VARIANTS[variant]}: tick -> served p50 {_num(served['p50'])} / "
                          f"p99 {_num(served['p99'])} s, covered {result['covered']:,} / {result['ticks']:,}; "
                          f"GET p99 {_num(get.get('p99'))} ms at {get.get('achieved', 0):,.0f} req/s", flush=True)
        finally:
            observer.stop()
        api_errors = sum(1 for line in api_log.read_text(errors="replace").splitlines()
                         if " ERROR " in line or "Traceback" in line)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    return {"runs": runs, "symbols": args.symbols, "universe": universe, "rate": rate, "api_error_lines": api_errors,
            "observed": len(observed),
            "api_ws_clients_metric": next((line for line in metrics.splitlines()
                                           if line.startswith("tickcast_websocket_clients ")), None),
            "seconds": time.monotonic() - began, "config": str(args.config.name),
            "sequence_length": config.training.sequence_length, "features": len(config.features)}


def one_run(args, settings, bootstrap: str, env: dict[str, str], observer: Observer, observed: set[str],
            scorer: subprocess.Popen, services: dict[str, subprocess.Popen], base: str, key: str, universe: int,
            rate: int, scratch: Path) -> dict:
    """One run of the feed with one scorer already started: the figures of its measured window."""
    import pandas as pd

    from tickcast.platform.processes import TICKCAST

    observer.take()  # what came before this run (the scorer's start-up predictions) is not this run's
    start_offsets = topic_ends(bootstrap, settings.topic_ticks)
    start_published = topic_ends(bootstrap, settings.topic_predictions)
    cpu = Cpu({"scorer": scorer.pid, **{name: proc.pid for name, proc in services.items()}})
    total = args.pred_warmup + args.pred_seconds
    feed_log = scratch / "feed.log"
    with feed_log.open("a") as out:
        feed = subprocess.Popen([TICKCAST, "produce", "synthetic", "--symbols", str(universe), "--rate", str(rate),
                                 "--seconds", f"{total:g}", "--seed", str(args.seed)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    cpu.processes["feed"] = feed.pid
    get: dict = {}
    getter: threading.Thread | None = None
    try:
        time.sleep(args.pred_warmup)
        window_start = time.time()
        first = cpu.sample()
        if args.get_rate:
            def load() -> None:
                try:
                    get.update(paced_get(base, key, min(universe - 1, 9999), rate=args.get_rate,
                                         connections=args.get_connections, duration=max(args.pred_seconds - 2, 1),
                                         scratch=scratch))
                except Exception as exc:  # noqa: BLE001 - reported in the table, the latency still counts
                    get["error"] = f"{type(exc).__name__}: {exc}"

            getter = threading.Thread(target=load, daemon=True)
            getter.start()
        # CPU up to just before the feed ends (after, its process is gone).
        time.sleep(max(0.0, window_start + args.pred_seconds - 1 - time.time()))
        last = cpu.sample()
        load = os.getloadavg()[0]
        feed.wait(timeout=total + 300)
        window_end = time.time()
    finally:
        if feed.poll() is None:
            feed.kill()
        if getter is not None:
            getter.join(120)
    if feed.returncode:
        raise RuntimeError(f"the feed exited {feed.returncode}; see {feed_log}")
    # The drain: until the newest tick's prediction was pushed, or --drain seconds.
    deadline = time.monotonic() + args.drain
    wanted = pd.Timestamp(window_end, unit="s", tz="UTC") - pd.Timedelta(seconds=2)
    while time.monotonic() < deadline:
        newest = observer.newest_data_timestamp()
        if newest is not None and pd.Timestamp(newest) >= wanted:
            time.sleep(3)  # the rest of that cycle's predictions
            break
        time.sleep(0.5)
    end_offsets = topic_ends(bootstrap, settings.topic_ticks)
    end_published = topic_ends(bootstrap, settings.topic_predictions)
    served = served_frame(observer.take())
    ticks = read_ticks(bootstrap, settings.topic_ticks, start_offsets, end_offsets)
    published = read_published(bootstrap, settings.topic_predictions, start_published, end_published)
    in_window = ticks[(ticks["produced_at"] >= pd.Timestamp(window_start, unit="s", tz="UTC"))
                      & (ticks["produced_at"] <= pd.Timestamp(window_end, unit="s", tz="UTC"))
                      & ticks["symbol"].isin(observed)]
    figures = match(in_window, served, published)
    figures.update(get=get or None, cpu_cores=Cpu.cores(first, last), load1=load,
                   window_s=window_end - window_start, ticks_produced=int(len(ticks)))
    return figures


def report(args, machine: str, figures: dict, console) -> None:
    import numpy as np
    from rich.table import Table

    runs = figures["runs"]

    def s(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    def ms(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    table = Table(title="bench/stream predictions: each run, in the order run (A = echo scorer, B = live scorer)")
    for column in ("round", "scorer", "tick -> served p50 / p99 / max (s)", "tick -> predicted_at p50 / p99 (s)",
                   "predicted_at -> served p50 / p99 (s)", "on the topic -> pushed by the API p50 / p99 (s)",
                   "ticks covered / not", "GET one p50 / p99 / max (ms)",
                   "CPU cores: scorer, api, ticks, bars, feed", "load avg"):
        table.add_column(column, justify="right")
    for r in runs:
        get = r.get("get") or {}
        table.add_row(
            str(r["round"]), VARIANTS[r["variant"]],
            f"{s(r['served_s']['p50'])} / {s(r['served_s']['p99'])} / {s(r['served_s']['max'])}",
            f"{s(r['to_predicted_at_s']['p50'])} / {s(r['to_predicted_at_s']['p99'])}",
            f"{s(r['predicted_at_to_served_s']['p50'])} / {s(r['predicted_at_to_served_s']['p99'])}",
            f"{s(r['published_to_served_s']['p50'])} / {s(r['published_to_served_s']['p99'])}",
            f"{r['covered']:,} / {r['uncovered']:,}",
            get.get("error", "")[:40] or f"{ms(get.get('p50'))} / {ms(get.get('p99'))} / {ms(get.get('max'))} "
            f"({get.get('achieved', 0):,.0f}/s)" if get else "-",
            ", ".join(f"{r['cpu_cores'].get(k, float('nan')):.2f}" for k in ("scorer", "api", "ticks", "bars", "feed")),
            f"{r['load1']:.1f}")
    console.print(table)

    def median(variant: str, pick) -> float | None:
        values = [pick(r) for r in runs if r["variant"] == variant]
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    rows = [
        ("tick produced -> API serves a prediction including it, p99 (s)", lambda r: r["served_s"]["p99"],
         TARGET_SERVED_P99_S, "s"),
        ("  the same, p50 (s)", lambda r: r["served_s"]["p50"], None, "s"),
        ("  of which tick -> predicted_at, p99 (s)", lambda r: r["to_predicted_at_s"]["p99"], None, "s"),
        ("  of which predicted_at -> pushed by the API, p99 (s)", lambda r: r["predicted_at_to_served_s"]["p99"],
         None, "s"),
        ("  tick -> on the predictions topic, p99 (s)", lambda r: r["to_published_s"]["p99"], None, "s"),
        ("  on the predictions topic -> pushed by the API, p50 (s)", lambda r: r["published_to_served_s"]["p50"],
         None, "s"),
        ("  on the predictions topic -> pushed by the API, p99 (s)", lambda r: r["published_to_served_s"]["p99"],
         None, "s"),
        ("GET one prediction at a paced rate, p99 (ms)", lambda r: (r.get("get") or {}).get("p99"), TARGET_GET_P99_MS,
         "ms"),
        ("  the same, p50 (ms)", lambda r: (r.get("get") or {}).get("p50"), None, "ms"),
    ]
    summary = Table(title="bench/stream predictions: medians over the runs, the live scorer beside the echo baseline")
    for column in ("figure", "baseline: echo scorer", "live scorer", "ratio", "target", "met"):
        summary.add_column(column, justify="right")
    figures["summary"] = {}
    for name, pick, target, unit in rows:
        base, real = median("echo", pick), median("scorer", pick)
        ratio = real / base if base and real is not None else None
        met = "-" if target is None or real is None else ("yes" if real <= target else "no")
        summary.add_row(name, s(base), s(real), "-" if ratio is None else f"{ratio:.2f}",
                        "-" if target is None else f"<= {target:g} {unit}", met)
        figures["summary"][name.strip()] = {"baseline": base, "live_scorer": real, "ratio": ratio, "target": target}
    uncovered = sum(r["uncovered"] for r in runs)
    loads = [r["load1"] for r in runs if r.get("load1") is not None]
    load = f"; load average at the end of the windows {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    summary.caption = (
        f"conditions: {figures['symbols']:,} symbols + the index, synthetic feed at {figures['rate']:,} ticks/s "
        f"({figures['rate'] / figures['universe']:.2f} per symbol per s), {args.pred_warmup:g} s warm-up + "
        f"{args.pred_seconds:g} s measured per run, {args.repeats} runs of each scorer interleaved A/B; "
        f"{args.history_bars} daily bars of history; champions with {figures['config']}'s inputs "
        f"({figures['sequence_length']} bars x {figures['features']} features), untrained; the ingest (ticks and "
        f"bars queries, Spark local[*], trigger {args.trigger_seconds:g} s) running throughout; the API (one "
        f"uvicorn worker) following the predictions topic, {figures['observed']:,} symbols observed by {args.observers} "
        f"WebSocket clients; GET load "
        f"{args.get_rate:,} req/s paced over {args.get_connections} connections (bench/api.py's client, node) in the "
        f"measured window; {uncovered:,} ticks not covered by the end of the drains; API log: "
        f"{figures['api_error_lines']} ERROR/Traceback lines{load}\nmachine: {machine}\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, the predictions part took {figures['seconds'] / 60:.1f} min")
    console.print(summary)
