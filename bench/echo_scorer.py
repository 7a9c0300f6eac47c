"""The baseline scorer of `bench/stream.py --part predictions`: consume ticks, make a trivial
prediction of each, publish it the way the live scorer does.

    .venv/bin/python bench/echo_scorer.py        (settings from TICKCAST_* like any tickcast process)

Everything but the model is the live scorer's (`tickcast stream score`, tickcast/scoring/live_job.py):
a confluent-kafka consumer of ``topic_ticks`` polled the same way (up to 200,000 messages per
poll, ``live_poll_seconds`` wait), and each poll's predictions go through the same path - the
contract's JSON (``frame_payloads``) upserted into the online store, published on the
``predictions`` topic by ``PredictionPublisher``, appended to Delta ``predictions`` every
``live_history_seconds`` by the scorer's ``HistoryWriter``. The prediction is the newest tick of
each symbol in the poll echoed back (price as the predicted price, return 0, HOLD), with
``data_timestamp`` = that tick's ``ts``: one prediction per symbol per poll, as the live scorer
makes one per changed symbol per cycle. No bars, no features, no models, no checkpoint: it
starts at the end of the topic with a group of its own and commits nothing.

Prints ``echo scorer running`` once its partitions are assigned, and a line like the live
scorer's every 60 s; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.echo_scorer")


def echo_frame(values: list[bytes], predicted_at):
    """One prediction per symbol: its newest tick of ``values`` (raw tick JSON) echoed."""
    import numpy as np
    import orjson
    import pandas as pd

    newest: dict[str, tuple[str, float]] = {}
    for value in values:
        try:
            tick = orjson.loads(value)
            symbol, ts, price = tick["symbol"], tick["ts"], float(tick["price"])
        except (ValueError, KeyError, TypeError):
            continue  # the live scorer quarantines these; nothing to echo
        held = newest.get(symbol)
        if held is None or ts >= held[0]:  # ISO 8601 with a fixed width: text order is time order
            newest[symbol] = (ts, price)
    symbols = list(newest)
    prices = np.array([newest[s][1] for s in symbols], dtype=float)
    n = len(symbols)
    return pd.DataFrame({
        "symbol": symbols, "horizon": "1d", "predicted_return": np.zeros(n), "predicted_price": prices,
        "p10": prices, "p50": prices, "p90": prices, "prob_up": np.zeros(n), "prob_neutral": np.ones(n),
        "prob_down": np.zeros(n), "signal": "HOLD", "confidence": np.zeros(n), "model_name": "bench-echo",
        "model_version": "0",
        "data_timestamp": pd.to_datetime([newest[s][0] for s in symbols], utc=True, format="ISO8601"),
        "predicted_at": pd.Timestamp(predicted_at),
    })


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from datetime import UTC, datetime

    from confluent_kafka import Consumer, KafkaError

    from tickcast.catalog.online import open_online_store
    from tickcast.core.predictions import frame_payloads
    from tickcast.core.settings import load_settings
    from tickcast.scoring.live_job import MAX_MESSAGES_PER_CYCLE, HistoryWriter
    from tickcast.scoring.publish import PredictionPublisher, PublishError

    settings = load_settings()
    store = open_online_store(settings)
    publisher = PredictionPublisher(settings) if settings.scorer_publish_kafka else None
    history = HistoryWriter(settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    def assigned(consumer, partitions) -> None:
        consumer.assign(partitions)
        log.info("echo scorer running: %d partition(s) of %s assigned", len(partitions), settings.topic_ticks)

    consumer = Consumer({
        **settings.kafka_client_config("scorer"), "group.id": f"bench-echo-{uuid.uuid4().hex}",
        "auto.offset.reset": "latest", "enable.auto.commit": False, "fetch.wait.max.ms": 10,
    })
    consumer.subscribe([settings.topic_ticks], on_assign=assigned)
    spent = dict.fromkeys(("parsing", "store+topic", "Delta history"), 0.0)
    ticks = cycles = predictions = 0
    started = next_flush = time.monotonic()
    try:
        while not stopping.is_set():
            messages = consumer.consume(MAX_MESSAGES_PER_CYCLE, timeout=settings.live_poll_seconds)
            values = []
            for message in messages:
                error = message.error()
                if error is None:
                    values.append(message.value())
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka: %s", error)
            if values:
                mark = time.monotonic()
                frame = echo_frame(values, datetime.now(UTC))
                rows = frame_payloads(frame)  # the same JSON for the store and the topic
                now = time.monotonic()
                spent["parsing"] += now - mark
                store.upsert_rows(rows)
                if publisher is not None:
                    try:
                        publisher.publish_rows(rows)
                    except PublishError as exc:
                        log.error("%d prediction(s) not published to Kafka: %s", len(rows), exc)
                history.add(frame)
                spent["store+topic"] += time.monotonic() - now
                ticks, cycles, predictions = ticks + len(values), cycles + 1, predictions + len(rows)
            now = time.monotonic()
            if now >= next_flush:
                history.flush()
                next_flush = now + settings.live_history_seconds
                spent["Delta history"] += time.monotonic() - now
            if now - started >= 60:
                log.info("last %.0fs: %d ticks folded, %d cycles, %d predictions; seconds spent %s;",
                         now - started, ticks, cycles, predictions,
                         ", ".join(f"{part} {seconds:.1f}" for part, seconds in spent.items()))
                ticks = cycles = predictions = 0
                started = now
                spent = dict.fromkeys(spent, 0.0)
    finally:
        history.flush()
        consumer.close()
        log.info("echo scorer stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
