"""`tickcast stream score`: the live scorer's IO around ``tickcast.scoring.live``.

In: topic ``ticks`` (its own consumer group), and Delta ``bars_<interval>`` / ``features`` at
start and every ``live_reload_seconds`` (the stream's closed bars, corrected by backfills and
corporate actions, replace the scorer's).

Restarts: every ``live_checkpoint_seconds`` and on stop, the open bars (and what dedupe and
lateness need) are saved with the Kafka offsets of the ticks they include, in one file written
atomically (``ScorerCheckpoint``); a restart, after SIGKILL too, restores them and reads on
from exactly those offsets, so no tick is missed or counted twice. The offsets are committed to
the consumer group as well, for `tickcast status`. Without a checkpoint (the first start) the
scorer starts at the newest offset, its open bars from the stream's bars in Delta.

Out, every cycle: the online store (what the API serves and pushes), topic ``predictions``;
and every ``live_history_seconds`` one append to Delta ``predictions`` (the history kept for
evaluation), through delta-rs.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.catalog import tables
from tickcast.core import kafka_auth
from tickcast.core.faults import FaultPoint, fault_point
from tickcast.core.intervals import INTERVALS

if TYPE_CHECKING:
    import pandas as pd

    from tickcast.core.settings import Settings
    from tickcast.scoring.live import LiveMarket

log = logging.getLogger("tickcast.scoring.live")

CONSUMER_GROUP = kafka_auth.SCORER_GROUP
MAX_MESSAGES_PER_CYCLE = 200_000


def read_state(settings: Settings, market: LiveMarket, now: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Delta's trailing bars and features of the scorer's interval, as ``LiveMarket.load`` takes them."""
    import pyarrow.dataset as ds

    from tickcast.core.featureset import TRAILING_BARS
    from tickcast.scoring.live import STATE_COLUMNS

    interval = market.interval
    since = now - INTERVALS[interval].length * int((TRAILING_BARS + 1) * settings.features_lookback_factor)
    recent = ds.field("window_start") >= since
    bars = tables.read_frame(settings, tables.bars(interval), list(STATE_COLUMNS), recent)
    features = tables.read_frame(settings, tables.FEATURES, market.feature_columns, recent,
                                 partitions=[("interval", "=", interval)])
    return bars, features


class ScorerCheckpoint:
    """The scorer's state and the Kafka offsets it includes, saved atomically in one file."""

    def __init__(self, path: Path):
        self.path = path

    def load(self, topic: str) -> tuple[dict[str, Any], dict[int, int]] | None:
        """(market state, next offset per partition) saved for ``topic``; None without one."""
        import orjson

        try:
            saved = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        if saved.get("topic") != topic:
            log.warning("checkpoint %s is of topic %s, not %s: starting afresh", self.path, saved.get("topic"), topic)
            return None
        return saved["market"], {int(p): int(o) for p, o in saved["offsets"].items()}

    def save(self, topic: str, market: dict[str, Any], offsets: dict[int, int]) -> None:
        import orjson

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"topic": topic, "offsets": {str(p): o for p, o in offsets.items()},
                                      "saved_at": datetime.now(UTC).isoformat(), "market": market}))
        os.replace(tmp, self.path)


def checkpoint_path(settings: Settings) -> Path:
    return settings.checkpoint_dir / "live-scorer" / f"{settings.scorer_interval}.json"


class HistoryWriter:
    """Predictions buffered and appended to Delta ``predictions`` in one commit at a time."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pending: list[pd.DataFrame] = []

    def add(self, frame: pd.DataFrame) -> None:
        if len(frame):
            self.pending.append(frame)

    def flush(self) -> int:
        if not self.pending:
            return 0
        import pandas as pd

        from tickcast.core.predictions import frame_to_arrow

        frame = pd.concat(self.pending, ignore_index=True)
        try:
            tables.append_arrow(self.settings, tables.PREDICTIONS, frame_to_arrow(frame))
        except Exception as exc:  # noqa: BLE001 - kept and tried again at the next flush
            self.pending = [frame]
            log.error("%d prediction(s) not yet in Delta predictions (kept, retried at the next flush): %s",
                      len(frame), exc)
            return 0
        self.pending = []
        return len(frame)


def _tally(spent: dict[str, float], part: str, since: float) -> float:
    now = time.monotonic()
    spent[part] += now - since
    return now


def run(settings: Settings, stop_after_seconds: float | None = None) -> None:
    """Score live until SIGTERM/SIGINT (or ``stop_after_seconds``)."""
    import numpy as np
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError

    from tickcast.catalog.events import EventPublisher, StateReporter
    from tickcast.catalog.online import PredictionStoreUnavailable, open_online_store
    from tickcast.catalog.progress import ProgressFile, progress_path
    from tickcast.core.predictions import frame_payloads
    from tickcast.scoring.live import LiveMarket, parse_ticks, score_cycle, score_stale
    from tickcast.scoring.models import ChampionWatcher, ModelLoader
    from tickcast.scoring.publish import PredictionPublisher, PublishError

    interval = settings.scorer_interval
    market = LiveMarket(interval, late_tolerance_us=settings.late_tolerance_seconds * 1_000_000,
                        rescore_per_cycle=settings.live_rescore_per_cycle)
    future_us = settings.future_tolerance_seconds * 1_000_000
    store = open_online_store(settings, timeout=settings.live_store_timeout_seconds)
    publisher = PredictionPublisher(settings) if settings.scorer_publish_kafka else None
    history = HistoryWriter(settings)
    events = EventPublisher(settings, "scorer")
    # Checks of the registry on a thread of their own: one that does not answer (each request
    # bounded by mlflow_http_timeout_seconds) is reported and never stalls a cycle.
    champions = ChampionWatcher(ModelLoader(settings), interval, settings.scorer_reload_seconds,
                                report=events.report, background=True)
    index = settings.market_index_symbol
    # The online store's health, for the alert engine: a write that fails (the file locked by
    # another process, a full disk) must not stop the scoring, nor pass unnoticed.
    store_health = StateReporter(events, "scorer")
    # Per symbol, the newest row the online store has not taken yet (a failed write), with the
    # data time it is of: written with the next cycle's rows, so none is dropped.
    unstored: dict[str, tuple[str, str, str, str]] = {}

    def load_into(target: LiveMarket) -> LiveMarket:
        started = time.monotonic()
        now = datetime.now(UTC)
        bars, features = read_state(settings, target, now)
        target.load(bars, features, int(now.timestamp() * 1_000_000))
        log.info("loaded %d closed bars and %d feature rows of %d symbols from Delta in %.2fs",
                 len(target.closed), len(target.closed_features), target.closed["symbol"].nunique(),
                 time.monotonic() - started)
        return target

    # Reloads run on their own thread into a shadow of the state, so scoring goes on meanwhile
    # (a reload of 5,000 symbols x 400 bars takes seconds); the loop adopts the result.
    reloads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delta-reload")
    reloading: Future[LiveMarket] | None = None

    stopping = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("signal %s: stopping after the current cycle", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    topic = settings.topic_ticks
    saved = ScorerCheckpoint(checkpoint_path(settings))
    restored = saved.load(topic)
    # Next offset to read per partition: what the open bars include.
    positions: dict[int, int] = {}
    if restored is not None:
        state, positions = restored
        market.restore(state)
        log.info("restored %d open bars from %s; reading %s from offsets %s", len(market.open), saved.path, topic,
                 positions)

    def seek_to_checkpoint(consumer, assigned) -> None:
        for partition in assigned:
            if partition.partition in positions:
                partition.offset = positions[partition.partition]
        consumer.assign(assigned)

    consumer = Consumer({
        # Without a checkpoint, the newest tick: the open bars start from the stream's in Delta.
        **settings.kafka_client_config("scorer"), "group.id": CONSUMER_GROUP, "auto.offset.reset": "latest",
        # Offsets are committed with each checkpoint, never ahead of it.
        "enable.auto.commit": False, "fetch.wait.max.ms": 10,
        # A killed scorer's partitions go to its restart after 10 s, not the default 45 (no
        # prediction is made meanwhile).
        "session.timeout.ms": 10_000,
        # The client's own errors (the broker gone: _TRANSPORT, _ALL_BROKERS_DOWN) in the scorer's
        # log; librdkafka retries by itself and the loop goes on as soon as the broker is back.
        "error_cb": lambda error: log.warning("kafka: %s", error),
    })
    consumer.subscribe([topic], on_assign=seek_to_checkpoint)

    progress = ProgressFile(progress_path(settings, "scorer"))
    # Since the last report: ticks read, cycles scored, predictions, seconds spent in cycles.
    window = {"ticks": 0, "cycles": 0, "predictions": 0, "busy": 0.0, "since": time.monotonic(), "batches": 0}

    def save_checkpoint() -> None:
        from confluent_kafka import TopicPartition

        fault_point(FaultPoint.SCORER_BEFORE_CHECKPOINT)
        saved.save(topic, market.checkpoint(settings.live_checkpoint_msg_ids), positions)
        if positions:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()], asynchronous=True)
        # The fields of a Spark query's progress that `tickcast status` shows, for the scorer.
        elapsed = max(time.monotonic() - window["since"], 1e-9)
        window["batches"] += window["cycles"]
        progress.record("scorer", {
            "name": "scorer", "batchId": window["batches"], "timestamp": datetime.now(UTC).isoformat(),
            "numInputRows": window["ticks"], "inputRowsPerSecond": window["ticks"] / elapsed,
            "processedRowsPerSecond": window["predictions"] / elapsed,
            "durationMs": {"triggerExecution": 1000 * window["busy"] / max(window["cycles"], 1)},
            "sources": [{"description": f"Kafka[{topic}]",
                         "endOffset": {topic: {str(p): o for p, o in positions.items()}}}],
        })
        window.update(ticks=0, cycles=0, predictions=0, busy=0.0, since=time.monotonic())

    def to_store(rows: list[tuple[str, str, str, str]]) -> None:
        """``rows`` and those a failed write kept into the online store; on failure they are kept
        for the next try and ``online_store_unavailable`` is reported (again each minute)."""
        for row in rows:
            kept = unstored.get(row[0])
            if kept is None or kept[1] <= row[1]:
                unstored[row[0]] = row
        if not unstored:
            return
        try:
            store.upsert_rows(list(unstored.values()))
        except (sqlite3.Error, OSError, PredictionStoreUnavailable) as exc:
            log.error("online store %s not written (%d symbol(s) kept for the next try): %s", store.where,
                      len(unstored), exc)
            store_health.state("online_store_unavailable", True,
                               f"the scorer cannot write the online store: {exc}; served predictions are aging",
                               severity="critical", details={"symbols_waiting": len(unstored), "error": str(exc)})
            return
        if store_health.firing("online_store_unavailable"):
            log.info("online store written again (%d symbol(s))", len(unstored))
            store_health.state("online_store_unavailable", False, "the scorer writes the online store again")
        unstored.clear()

    def publish(frame: pd.DataFrame) -> None:
        """To the online store (served and pushed), the `predictions` topic and the history."""
        rows = frame_payloads(frame)  # the same JSON for the store and the topic
        to_store(rows)
        fault_point(FaultPoint.SCORER_AFTER_STORE_WRITE)
        if publisher is not None:
            try:
                publisher.publish_rows(rows)
            except PublishError as exc:  # served and kept in Delta all the same
                log.error("%d prediction(s) not published to Kafka: %s", len(frame), exc)
        history.add(frame)

    def score_untouched() -> None:
        """Symbols whose bars came by backfill and no tick: scored from their closed bars."""
        frame, skipped = score_stale(market, champions.current())
        if len(frame):
            publish(frame)
            log.info("scored %d symbol(s) without ticks from their stored bars (stale by their data time)",
                     len(frame))
        if skipped:
            log.info("%d symbol(s) without ticks not scored, e.g. %s", len(skipped),
                     "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:3]))

    load_into(market)
    dual = champions.start()
    log.info("live scorer running: kafka %s topic %s, %s bars, %s", settings.kafka_bootstrap_servers,
             settings.topic_ticks, interval,
             f"{dual.model_name} version {dual.model_version}" if dual else "momentum baseline (no champion)")
    deadline = time.monotonic() + stop_after_seconds if stop_after_seconds else None
    next_reload = time.monotonic() + settings.live_reload_seconds
    next_flush = time.monotonic() + settings.live_history_seconds
    next_checkpoint = time.monotonic() + settings.live_checkpoint_seconds
    cycles, scored, folded, started = 0, 0, 0, time.monotonic()
    # Seconds of the loop spent on each part since the last log line: where a slow cycle goes.
    spent = dict.fromkeys(("folding", "scoring", "store+topic", "Delta history"), 0.0)
    try:
        score_untouched()
        while not stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            messages = consumer.consume(MAX_MESSAGES_PER_CYCLE, timeout=0 if market.dirty else settings.live_poll_seconds)
            mark = cycle_started = time.monotonic()
            values, received = [], []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("kafka: %s", error)
                    continue
                kind, millis = message.timestamp()
                partition, offset = message.partition(), message.offset()
                if partition is not None and offset is not None:  # always, on a consumed message
                    positions[partition] = offset + 1
                values.append(message.value())
                received.append(millis * 1000 if kind != TIMESTAMP_NOT_AVAILABLE else time.time_ns() // 1000)
            if values:
                ticks, _ = parse_ticks(values, np.array(received, dtype=np.int64), future_us)
                folded += market.fold_batch(ticks)
                window["ticks"] += len(values)
            mark = _tally(spent, "folding", mark)
            if market.dirty:
                frame, skipped = score_cycle(market, champions.current(), index_symbol=index, horizon=interval,
                                             lookback=settings.predictor_lookback_bars)
                mark = _tally(spent, "scoring", mark)
                if skipped and cycles % 100 == 0:
                    log.info("%d symbol(s) not scored, e.g. %s", len(skipped),
                             "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:3]))
                if len(frame):
                    fault_point(FaultPoint.SCORER_AFTER_SCORE)
                    publish(frame)
                    scored += len(frame)
                    window["predictions"] += len(frame)
                cycles += 1
                window["cycles"] += 1
                window["busy"] += time.monotonic() - cycle_started
                mark = _tally(spent, "store+topic", mark)
            else:
                # Idle, the champion is still followed (a check costs nothing between checks): a
                # promotion, or a champion that can be loaded again, is seen and reported before
                # the next tick.
                champions.current()
                if unstored:  # what a failed write kept, tried again while there is time
                    to_store([])
            now = time.monotonic()
            if now >= next_flush:
                history.flush()
                next_flush = now + settings.live_history_seconds
                _tally(spent, "Delta history", now)
            if now >= next_checkpoint:
                save_checkpoint()
                next_checkpoint = now + settings.live_checkpoint_seconds
            if reloading is None and now >= next_reload:
                reloading = reloads.submit(load_into, market.shadow())
            elif reloading is not None and reloading.done():
                try:
                    adopted = market.adopt(reloading.result())
                except Exception:  # noqa: BLE001 - a failed reload keeps the state held here; the next one retries
                    log.exception("reload from Delta failed; keeping the state held here")
                    adopted = True
                if adopted:
                    score_untouched()
                else:
                    log.info("bars closed here during the reload; loading again")
                reloading = None
                next_reload = now + (settings.live_reload_seconds if adopted else 0)
            if now - started >= 60:
                log.info("last %.0fs: %d ticks folded, %d cycles, %d predictions; seconds spent %s; skipped %s",
                         now - started, folded, cycles, scored,
                         ", ".join(f"{part} {seconds:.1f}" for part, seconds in spent.items()), market.skipped)
                cycles, scored, folded, started = 0, 0, 0, now
                spent = dict.fromkeys(spent, 0.0)
    finally:
        reloads.shutdown(wait=True, cancel_futures=True)
        history.flush()
        save_checkpoint()
        consumer.close()
        events.flush(5)
        log.info("live scorer stopped")
