"""The broker SIGKILLed and restarted on the same ports and log dir, then paused (SIGSTOP)
and resumed, under the live scorer (`tickcast stream score`, a subprocess as the harness runs
it): the scorer recovers by itself (the same process, no restart), says so in its log, and
every tick the broker acknowledged (acks=all, idempotent producer, counted by delivery
report) is folded exactly once, its predictions served, published and kept once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pandas as pd
import pytest
from confluent_kafka import Producer

from tests.faults.conftest import FaultHome
from tests.faults.test_scorer_faults import FAST, SYMBOLS, check_invariants, read_from_the_start
from tickcast.catalog.online import OnlineStore
from tickcast.platform.broker import BrokerProcess
from tickcast.platform.processes import wait_until

pytestmark = pytest.mark.slow

# How long the broker stays paused: longer than the scorer's consumer session (10 s), so its
# group membership lapses, as a broker stalled by swap or a stop-the-world pause would do.
PAUSE_SECONDS = 15


class AckedFeed:
    """Ticks of a few symbols on one partition; a tick counts once the broker acknowledged it
    (its delivery report), and ``sent`` lists those per symbol in offset order."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        # Idempotence implies acks=all; said anyway, it is what "acknowledged" means here.
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        self.produced: dict[str, int] = {}
        self.acked: dict[str, list[tuple[int, tuple[float, float, pd.Timestamp]]]] = {}
        self.failed: list[str] = []

    def send(self, symbol: str) -> None:
        n = self.produced.get(symbol, 0)
        self.produced[symbol] = n + 1
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        price, volume = 100.0 + (n * 7) % 13 * 0.5, float(1 + n % 5)
        value = {"schema_version": 1, "msg_id": f"{symbol}-{n}", "symbol": symbol, "ts": stamp, "price": price,
                 "volume": volume, "bid": None, "ask": None, "source": "faults", "produced_at": stamp}
        tick = (price, volume, pd.Timestamp(now))

        def delivered(err, msg) -> None:
            if err is not None:
                self.failed.append(f"{symbol}-{n}: {err}")
            else:
                self.acked.setdefault(symbol, []).append((msg.offset(), tick))

        self.producer.produce(self.topic, key=symbol.encode(), value=json.dumps(value).encode(), on_delivery=delivered)

    def round(self, wait: bool = True) -> None:
        for symbol in SYMBOLS:
            self.send(symbol)
        self.producer.poll(0)
        if wait:
            self.all_acked()

    def all_acked(self) -> None:
        wait_until(lambda: self.producer.flush(1) == 0, timeout=180, interval=0, what="every tick acknowledged")
        assert not self.failed, self.failed  # none given up on: each produced tick is acknowledged

    @property
    def sent(self) -> dict[str, list[tuple[float, float, pd.Timestamp]]]:
        return {symbol: [tick for _, tick in sorted(acked)] for symbol, acked in self.acked.items()}


def test_the_broker_killed_and_paused_under_the_scorer(base_settings, tmp_path, mlflow_uri):
    with BrokerProcess(base_settings, tmp_path / "kafka") as broker:
        home = FaultHome(tmp_path, base_settings, broker.bootstrap, mlflow_uri)
        try:
            feed = AckedFeed(home.bootstrap, home.topics["ticks"])
            read_from_the_start(home)
            scorer = home.job("stream", "score", log_name="scorer", **FAST)
            store = OnlineStore(home.settings.online_store_path)

            def serves_the_newest() -> bool:
                newest = {s: ticks[-1][2] for s, ticks in feed.sent.items()}
                found = {s: store.get(s) for s in SYMBOLS}
                return all(p is not None and pd.Timestamp(p.data_timestamp) >= newest[s] for s, p in found.items())

            def recovered(what: str) -> None:
                wait_until(serves_the_newest, timeout=180, interval=0.5, what=what, on_timeout=scorer.log_tail)

            feed.round()
            recovered("the scorer serving")
            pid = scorer.proc.pid

            # SIGKILL, ticks produced meanwhile (buffered by the producer), the broker started again.
            broker.kill()
            feed.round(wait=False)
            # Loudly: the scorer's own log line, not only librdkafka's.
            wait_until(lambda: "kafka: KafkaError{code=_ALL_BROKERS_DOWN" in scorer.log_since_start(), timeout=120,
                       interval=0.5, what="the scorer logging the broker's loss", on_timeout=scorer.log_tail)
            broker.start()
            feed.all_acked()
            recovered("the scorer serving the ticks acknowledged after the restart")

            # SIGSTOP: the broker holds every connection and answers nothing, then SIGCONT.
            broker.pause()
            try:
                feed.round(wait=False)
                time.sleep(PAUSE_SECONDS)  # the outage itself, not a measurement
            finally:
                broker.resume()
            feed.all_acked()
            recovered("the scorer serving the ticks acknowledged after the pause")
            feed.round()
            recovered("the scorer serving after both faults")

            # Recovered by itself: the same process throughout, never restarted.
            assert scorer.alive and scorer.proc.pid == pid, scorer.log_tail()
            assert scorer.log_since_start().count("live scorer running") == 1
            scorer.stop()
            assert scorer.proc.returncode == 0, scorer.log_tail()
            check_invariants(home, feed)
        finally:
            home.stop_all()
