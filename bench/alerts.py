"""Benchmark: the alert engine - predictions evaluated per second at 5,000 symbols with 1,000
rules, and prediction produced -> message handed to the SMS provider.

    .venv/bin/python bench/alerts.py [--symbols 5000] [--rules 1000] [--rate 5000] [--seconds 60]
                                     [--repeats 3] [--quick]

Everything real on a scratch TICKCAST_HOME with its own broker: `tickcast alerts run` (the
engine as the platform runs it), the rules added through the store, predictions published on
Kafka `predictions` with the scorer's own publisher, and the SMS channel through the real
`twilio` client to a local stand-in (tests/alerts/standins.py) that accepts at once.

1. Capacity (``--repeats`` interleaved rounds): a backlog of ``--backlog`` predictions is
   published, then B0, a bare confluent-kafka consumer, reads it (msg/s), and the engine, started
   on the same backlog with a fresh consumer group, evaluates it (predictions/s over the time
   from its first to its last committed offset, read from the group's committed offsets).
2. Latency at ``--rate`` predictions/s (one per symbol per second at 5,000 symbols) for
   ``--seconds``: the signals of a share of symbols flip BUY/HOLD so that rules fire; for each
   message the stand-in accepted, produced (the prediction's ``predicted_at``, stamped when it is
   published) -> accepted by the stand-in.

Rules: ``--rules`` in all - 80 % on one symbol each ("BUY with confidence >= 0.6"), 15 % on a
watchlist of 50 symbols ("HOLD -> BUY"), 5 % on every symbol with a bound that rarely holds
(|predicted return| >= 5 %) - all with throttle 0, so every incident sends.

Prints a table with the figures, the conditions and the machine; writes bench/results/alerts.json.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "alerts"))

from machine import describe_machine, save_result  # noqa: E402 - bench/ is sys.path[0] for a benchmark

PHONE = "+15551234567"


def add_rules(store, symbols: list[str], count: int) -> dict[str, int]:
    from tickcast.alerts.rules import RuleSpec

    per_symbol, per_watchlist = int(count * 0.8), int(count * 0.15)
    every = count - per_symbol - per_watchlist
    sms = [{"channel": "sms", "address": PHONE}]
    for i in range(per_symbol):
        store.add_rule(RuleSpec.model_validate({
            "name": f"buy-{i}", "symbols": [symbols[i % len(symbols)]], "recipients": sms, "throttle_seconds": 0,
            "on_signal": {"signal": "BUY", "min_confidence": 0.6}}))
    for i in range(per_watchlist):
        store.set_watchlist(f"w{i}", [symbols[(i * 50 + k) % len(symbols)] for k in range(50)])
        store.add_rule(RuleSpec.model_validate({
            "name": f"turn-{i}", "watchlist": f"w{i}", "recipients": sms, "throttle_seconds": 0,
            "on_signal": {"signal": "BUY", "previous_signal": "HOLD"}}))
    for i in range(every):
        store.add_rule(RuleSpec.model_validate({
            "name": f"big-{i}", "recipients": sms, "throttle_seconds": 0, "on_signal": {"min_abs_return": 0.05}}))
    return {"per_symbol": per_symbol, "per_watchlist": per_watchlist, "every_symbol": every}


def frame(symbols: list[str], signals: list[str], confidence: float):
    import numpy as np
    import pandas as pd

    from tickcast.core.predictions import FRAME_COLUMNS

    n = len(symbols)
    now = pd.Timestamp(datetime.now(UTC))
    return pd.DataFrame({
        "symbol": symbols, "horizon": "1m", "predicted_return": np.full(n, 0.01), "predicted_price": np.full(n, 101.0),
        "p10": np.full(n, -0.01), "p50": np.full(n, 0.01), "p90": np.full(n, 0.03), "prob_up": np.full(n, confidence),
        "prob_neutral": np.full(n, 1 - confidence), "prob_down": np.zeros(n), "signal": signals,
        "confidence": np.full(n, confidence), "model_name": "bench", "model_version": "1",
        "data_timestamp": now, "predicted_at": now,
    })[list(FRAME_COLUMNS)]


def produce(settings, symbols: list[str], rate: int, seconds: float, flip_share: float, seed: int) -> int:
    """One prediction per symbol per ``len(symbols) / rate`` seconds; a share of symbols flips
    HOLD <-> BUY each round (an incident opens or closes)."""
    from tickcast.scoring.publish import PredictionPublisher

    rng = random.Random(seed)
    publisher = PredictionPublisher(settings)
    state = dict.fromkeys(symbols, "HOLD")
    sent, started = 0, time.monotonic()
    chunk = max(rate // 10, 1)  # ten publishes a second
    while time.monotonic() - started < seconds:
        for start in range(0, len(symbols), chunk):
            part = symbols[start:start + chunk]
            for symbol in part:
                if rng.random() < flip_share:
                    state[symbol] = "BUY" if state[symbol] == "HOLD" else "HOLD"
            publisher.publish(frame(part, [state[s] for s in part], 0.7))
            sent += len(part)
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            if time.monotonic() - started >= seconds:
                break
    return sent


def publish_rounds(settings, symbols: list[str], rounds: int, flip_share: float, seed: int) -> int:
    """A backlog: ``rounds`` predictions of every symbol, as fast as the publisher goes."""
    from tickcast.scoring.publish import PredictionPublisher

    rng = random.Random(seed)
    publisher = PredictionPublisher(settings)
    state = dict.fromkeys(symbols, "HOLD")
    for _ in range(rounds):
        for symbol in symbols:
            if rng.random() < flip_share:
                state[symbol] = "BUY" if state[symbol] == "HOLD" else "HOLD"
        publisher.publish(frame(symbols, [state[s] for s in symbols], 0.7))
    return rounds * len(symbols)


def bare_consume(bootstrap: str, topic: str, expected: int) -> dict:
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b0-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen, first, last = 0, None, None
    deadline = time.monotonic() + 300
    while seen < expected and time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=1):
            if message.error() is None:
                first = first or time.monotonic()
                seen += 1
                last = time.monotonic()
    consumer.close()
    return {"messages": seen, "per_s": seen / max((last or 1) - (first or 0), 1e-9)}


def committed(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    consumer.close()
    return sum(max(o.offset, 0) for o in offsets)


def drain_rate(bootstrap: str, engine, group: str, topic: str, produced: int) -> float:
    """Predictions/s the engine evaluated: from its first committed offsets to the last (the time
    to start and subscribe left out), polled every 0.5 s."""
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if engine.poll() is not None:
            raise RuntimeError("the engine exited while draining the backlog (--keep keeps its log)")
        done = committed(bootstrap, group, topic)
        now = time.monotonic()
        if done > 0 and first is None:
            first = (now, done)
        if done >= produced:
            assert first is not None
            return (done - first[1]) / max(now - first[0], 1e-9)
        time.sleep(0.5)
    raise RuntimeError("the engine did not drain the backlog in 30 minutes")


def percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"n": 0, "p50": None, "p99": None}
    return {"n": len(values), "p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=5000, help="predictions/s in the latency part")
    parser.add_argument("--seconds", type=float, default=60, help="of the latency part")
    parser.add_argument("--backlog", type=int, default=50_000, help="predictions drained in each capacity round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flip-share", type=float, default=0.02, help="symbols flipping HOLD/BUY per round")
    parser.add_argument("--quick", action="store_true", help="a smoke run at a small scale (not a measurement)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "alerts.json")
    args = parser.parse_args()
    if args.quick:
        args.symbols, args.rules, args.rate, args.seconds, args.backlog, args.repeats = 500, 100, 500, 10, 5000, 1

    from scratch import scratch_platform
    from standins import ACCOUNT, TwilioStandIn, standin_server

    from tickcast.alerts.store import AlertStore
    from tickcast.platform.processes import TICKCAST, wait_until

    machine = describe_machine(java=False)
    print(f"machine: {machine}", flush=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the stand-in's line per request
    stack = contextlib.ExitStack()
    standin = TwilioStandIn(stack.enter_context(standin_server())).install()
    accepted_at: dict[str, float] = {}

    def on_accept(kept: dict) -> None:
        accepted_at[kept["body"].rsplit("ref ", 1)[-1]] = time.time()

    standin.on_accept = on_accept
    symbols = [f"S{i:04d}" for i in range(1, args.symbols + 1)]
    env = {"TICKCAST_TWILIO_ACCOUNT_SID": ACCOUNT, "TICKCAST_TWILIO_AUTH_TOKEN": "bench-token",
           "TICKCAST_TWILIO_FROM_NUMBER": "+15550000000", "TICKCAST_TWILIO_API_BASE": standin.url}
    capacity: list[dict] = []
    result: dict = {}
    try:
        with scratch_platform("alerts", keep=args.keep, env=env) as platform:
            settings = platform.settings
            subprocess.run([TICKCAST, "topics", "create"], env=platform.env, check=True, capture_output=True)
            store = AlertStore(settings.alerts_db_url)
            kinds = add_rules(store, symbols, args.rules)
            print(f"alerts: {args.rules:,} rules {kinds}, {args.symbols:,} symbols", flush=True)

            for round_ in range(args.repeats):
                # A backlog the engine has not seen: published before it starts, read from the start
                # by a fresh group.
                topic = f"bench-predictions-{round_}"
                subprocess.run([TICKCAST, "topics", "create"], env={**platform.env, "TICKCAST_TOPIC_PREDICTIONS": topic},
                               check=True, capture_output=True)
                backlog_settings = settings.model_copy(update={"topic_predictions": topic})
                produced = publish_rounds(backlog_settings, symbols, max(args.backlog // len(symbols), 1),
                                          args.flip_share, seed=round_)
                b0 = bare_consume(platform.bootstrap, topic, produced)
                group = f"bench-engine-{round_}"
                engine_env = {**platform.env, "TICKCAST_TOPIC_PREDICTIONS": topic, "TICKCAST_ALERTS_CONSUMER_GROUP": group}
                # A fresh group starts at the end by design; the bench wants the backlog: commit offset 0 first.
                from confluent_kafka import Consumer, TopicPartition

                seed_consumer = Consumer({"bootstrap.servers": platform.bootstrap, "group.id": group})
                parts = seed_consumer.list_topics(topic, timeout=10).topics[topic].partitions
                seed_consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in parts], asynchronous=False)
                seed_consumer.close()
                engine = platform.start(f"engine-{round_}", "alerts", "run", env=engine_env)
                engine_rate = drain_rate(platform.bootstrap, engine, group, topic, produced)
                platform.stop(f"engine-{round_}")
                capacity.append({"produced": produced, "b0_per_s": b0["per_s"], "engine_per_s": engine_rate})
                print(f"  round {round_ + 1}: {produced:,} predictions, B0 {b0['per_s']:,.0f}/s, engine "
                      f"{engine_rate:,.0f}/s ({engine_rate / b0['per_s']:.3f} x B0)", flush=True)

            # Latency: the engine following the live topic.
            standin.accepted.clear()
            accepted_at.clear()
            platform.start("engine", "alerts", "run")
            wait_until(lambda: "partition(s) assigned" in platform.log("engine").read_text(errors="replace"),
                       timeout=120, what="the engine to follow the predictions topic")
            load_before = os.getloadavg()[0]
            latency_started = datetime.now(UTC)
            produced = produce(settings, symbols, rate=args.rate, seconds=args.seconds, flip_share=args.flip_share,
                               seed=99)
            time.sleep(10)  # the last deliveries
            load_after = os.getloadavg()[0]
            platform.stop("engine")
            # This part's alerts only (the capacity rounds made theirs too).
            alerts = {a["id"][:12]: a for a in store.history(limit=1_000_000, since=latency_started)}
            undelivered = sum(a["status"] != "delivered" for a in alerts.values())
            latencies = []
            for reference, at in accepted_at.items():
                alert = alerts.get(reference)
                if alert is None or "predicted_at" not in alert["payload"]:
                    continue
                made = datetime.fromisoformat(alert["payload"]["predicted_at"]).timestamp()
                latencies.append(at - made)
            result = {
                "machine": machine, "conditions": {k: str(v) for k, v in vars(args).items()}, "rules": kinds,
                "capacity": capacity, "latency_s": percentiles(latencies), "produced": produced,
                "alerts": len(alerts), "messages": len(standin.accepted), "undelivered": undelivered,
                "load1": [load_before, load_after],
            }
            store.close()
    finally:
        stack.close()
    report(result)
    save_result(result, args.output)
    return 0


def report(result: dict) -> None:
    import statistics

    c = result["conditions"]
    print(f"\nAlert engine: {c['symbols']} symbols, {c['rules']} rules {result['rules']}, SMS through the twilio "
          f"client to a local stand-in")
    print(f"machine: {result['machine']}\n")
    print(f"{'round':<8}{'predictions':>13}{'B0 bare consumer /s':>22}{'engine /s':>12}{'engine / B0':>13}")
    for i, r in enumerate(result["capacity"], 1):
        print(f"{i:<8}{r['produced']:>13,}{r['b0_per_s']:>22,.0f}{r['engine_per_s']:>12,.0f}"
              f"{r['engine_per_s'] / r['b0_per_s']:>13.3f}")
    if result["capacity"]:
        engine = statistics.median(r["engine_per_s"] for r in result["capacity"])
        b0 = statistics.median(r["b0_per_s"] for r in result["capacity"])
        print(f"{'median':<8}{'':>13}{b0:>22,.0f}{engine:>12,.0f}{engine / b0:>13.3f}")
    lat = result["latency_s"]
    print(f"\nAt {c['rate']} predictions/s for {c['seconds']} s ({result['produced']:,} published): "
          f"{result['alerts']:,} alerts ({result['undelivered']:,} not delivered at the end), {result['messages']:,} "
          f"messages accepted; produced -> handed to the provider "
          f"p50 {lat['p50'] if lat['p50'] is None else round(lat['p50'], 3)} s, "
          f"p99 {lat['p99'] if lat['p99'] is None else round(lat['p99'], 3)} s (target p99 2 s); "
          f"load average {result['load1'][0]:.1f} -> {result['load1'][1]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
