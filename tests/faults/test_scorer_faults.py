"""The live scorer (`tickcast stream score`, the momentum baseline: no champion is registered)
SIGKILLed at each of its fault points, restarted without the fault: no tick is missed or
folded twice (its open bars are the fold of every tick sent), and no prediction is lost (the
newest data of every symbol is served, on Kafka and in Delta's history) or kept twice in the
history."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer

from tests.invariants import Events, topic_messages
from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore
from tickcast.core.faults import FaultPoint
from tickcast.platform.processes import wait_until

pytestmark = pytest.mark.slow

SYMBOLS = ("FA", "FB", "FC")
SCORER_POINTS = [FaultPoint.SCORER_AFTER_SCORE, FaultPoint.SCORER_AFTER_STORE_WRITE,
                 FaultPoint.SCORER_BEFORE_CHECKPOINT]
# Checkpoints and history flushes every second, so each point is passed soon after a tick.
FAST = {"TICKCAST_LIVE_CHECKPOINT_SECONDS": "1", "TICKCAST_LIVE_HISTORY_SECONDS": "1"}


class Feed:
    """Ticks of a few symbols, one partition, each remembered (price, volume, ts)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.sent: dict[str, list[tuple[float, float, pd.Timestamp]]] = {}

    def send(self, symbol: str) -> pd.Timestamp:
        kept = self.sent.setdefault(symbol, [])
        n = len(kept)
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        price, volume = 100.0 + (n * 7) % 13 * 0.5, float(1 + n % 5)
        value = {"schema_version": 1, "msg_id": f"{symbol}-{n}", "symbol": symbol, "ts": stamp, "price": price,
                 "volume": volume, "bid": None, "ask": None, "source": "faults", "produced_at": stamp}
        self.producer.produce(self.topic, key=symbol.encode(), value=json.dumps(value).encode())
        kept.append((price, volume, pd.Timestamp(now)))
        return pd.Timestamp(now)

    def round(self) -> None:
        for symbol in SYMBOLS:
            self.send(symbol)
        self.producer.flush(10)


def _checkpoint(settings) -> dict:
    from tickcast.scoring.live_job import checkpoint_path

    try:
        return json.loads(checkpoint_path(settings).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}


def read_from_the_start(home) -> None:
    """The scorer's consumer group at offset 0 of the fresh topic: its first start (without a
    checkpoint, it reads from the group's offset, else the newest) counts every tick sent."""
    from confluent_kafka import TopicPartition

    from tickcast.scoring.live_job import CONSUMER_GROUP

    consumer = Consumer({"bootstrap.servers": home.bootstrap, "group.id": CONSUMER_GROUP,
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(home.topics["ticks"], 0, 0)], asynchronous=False)
    consumer.close()


def check_invariants(home, feed: Feed) -> None:
    settings = home.settings
    # No tick missed or folded twice: each symbol's open bar is the fold of every tick sent.
    held = _checkpoint(settings)["market"]["open"]
    for symbol in SYMBOLS:
        sent = feed.sent[symbol]
        _, open_, high, low, close, volume, trades, *_ = held[symbol]
        prices = [p for p, _, _ in sent]
        assert (trades, open_, close, high, low) == (len(sent), prices[0], prices[-1], max(prices), min(prices))
        assert volume == pytest.approx(sum(v for _, v, _ in sent))
    newest = {symbol: feed.sent[symbol][-1][2] for symbol in SYMBOLS}
    # No prediction lost: the newest data of each symbol is served, published and in the history.
    store = OnlineStore(settings.online_store_path)
    served = {s: pd.Timestamp(store.get(s).data_timestamp) for s in SYMBOLS}
    assert served == newest
    published = pd.DataFrame(topic_messages(home.bootstrap, settings.topic_predictions))
    published = published[published["symbol"].isin(SYMBOLS)]
    on_kafka = pd.to_datetime(published["data_timestamp"], utc=True).groupby(published["symbol"]).max()
    assert on_kafka.to_dict() == newest
    history = tables.read_frame(settings, tables.PREDICTIONS, ["symbol", "data_timestamp", "predicted_at"])
    history = history[history["symbol"].isin(SYMBOLS)]
    kept = pd.to_datetime(history["data_timestamp"], utc=True)
    assert kept.groupby(history["symbol"]).max().to_dict() == newest
    # ... and none kept twice: one row per (symbol, data time) scored.
    assert not history.duplicated(["symbol", "data_timestamp", "predicted_at"]).any(), history


@pytest.mark.parametrize("point", SCORER_POINTS, ids=lambda p: p.value)
def test_scorer_killed_at_a_point_resumes_with_no_tick_or_prediction_lost(fault_home, point):
    home = fault_home()
    feed = Feed(home.bootstrap, home.topics["ticks"])
    read_from_the_start(home)
    # At the second pass, so the first run has done something (a checkpoint, a cycle) before.
    faulty = home.job("stream", "score", log_name="scorer", fault=f"{point.value}:kill:after=2", **FAST)

    def died() -> bool:
        if not faulty.alive:
            return True
        feed.round()
        return False

    wait_until(died, timeout=120, interval=0.3, what=f"the scorer to die at {point.value}",
               on_timeout=faulty.log_tail)
    assert faulty.proc.returncode == -signal.SIGKILL, faulty.log_tail()
    assert f"fault injected at {point.value}" in faulty.log_since_start()
    feed.round()  # while no scorer runs

    scorer = home.job("stream", "score", log_name="scorer", **FAST)
    feed.round()
    store = OnlineStore(home.settings.online_store_path)

    def serves_the_newest() -> bool:
        found = {s: store.get(s) for s in SYMBOLS}
        return all(p is not None and pd.Timestamp(p.data_timestamp) >= feed.sent[s][-1][2] for s, p in found.items())

    wait_until(serves_the_newest, timeout=120, interval=0.3, what="the restarted scorer serving the newest ticks",
               on_timeout=scorer.log_tail)
    scorer.stop()
    assert scorer.proc.returncode == 0, scorer.log_tail()
    check_invariants(home, feed)


# Holds the online store's write lock (BEGIN EXCLUSIVE) until its stdin closes.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_a_locked_online_store_is_reported_and_caught_up_once_unlocked(fault_home):
    """Another process holds the online store's write lock: the scorer keeps scoring and
    publishing, reports `online_store_unavailable` (rather than crash-looping), and writes what
    it kept once the lock goes."""
    import subprocess
    import sys

    home = fault_home()
    feed = Feed(home.bootstrap, home.topics["ticks"])
    read_from_the_start(home)
    events = Events(home.bootstrap, home.topics["alerts"])
    scorer = home.job("stream", "score", log_name="scorer", **FAST)
    store = OnlineStore(home.settings.online_store_path)

    def serves(symbol: str, ts: pd.Timestamp) -> bool:
        return (found := store.get(symbol)) is not None and pd.Timestamp(found.data_timestamp) >= ts

    feed.round()
    wait_until(lambda: all(serves(s, feed.sent[s][-1][2]) for s in SYMBOLS), timeout=120, interval=0.3,
               what="the scorer serving", on_timeout=scorer.log_tail)
    served_before = feed.sent[SYMBOLS[0]][-1][2]
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(home.settings.online_store_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        feed.round()
        wait_until(lambda: "firing" in events.of("online_store_unavailable"), timeout=60, interval=0.2,
                   what="online_store_unavailable reported", on_timeout=scorer.log_tail)
        feed.round()
        newest = feed.sent[SYMBOLS[0]][-1][2]
        # Scored and published all the same, only not served: nothing waits behind the lock.
        wait_until(lambda: any(pd.Timestamp(p["data_timestamp"]) >= newest and p["symbol"] == SYMBOLS[0]
                               for p in topic_messages(home.bootstrap, home.topics["predictions"])),
                   timeout=60, interval=0.5, what="the newest prediction on Kafka while locked",
                   on_timeout=scorer.log_tail)
        assert scorer.alive, scorer.log_tail()
        assert pd.Timestamp(store.get(SYMBOLS[0]).data_timestamp) == served_before
    finally:
        locker.stdin.close()
        locker.wait(timeout=30)
    wait_until(lambda: all(serves(s, feed.sent[s][-1][2]) for s in SYMBOLS), timeout=60, interval=0.3,
               what="the kept predictions served once unlocked", on_timeout=scorer.log_tail)
    wait_until(lambda: events.of("online_store_unavailable")[-1] == "resolved", timeout=30, interval=0.2,
               what="online_store_unavailable resolved", on_timeout=scorer.log_tail)
    events.consumer.close()
    scorer.stop()
    assert scorer.proc.returncode == 0, scorer.log_tail()
    check_invariants(home, feed)


@pytest.fixture
def small_disk(tmp_path):
    """``mount(path)``: a 1 MiB tmpfs mounted at ``path`` (the tests run as root), unmounted after."""
    import subprocess

    mounted: list = []

    def mount(path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
        mounted.append(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory) -> None:
    """Take every free byte of ``directory``'s file system."""
    import os

    stats = os.statvfs(directory)
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, stats.f_bavail * stats.f_frsize)
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0


def test_a_full_checkpoint_disk_stops_the_scorer_loudly_and_it_resumes_losing_nothing(fault_home, small_disk):
    home = fault_home()
    feed = Feed(home.bootstrap, home.topics["ticks"])
    read_from_the_start(home)
    small_disk(home.settings.checkpoint_dir)
    scorer = home.job("stream", "score", log_name="scorer", **FAST)
    store = OnlineStore(home.settings.online_store_path)
    feed.round()
    wait_until(lambda: _checkpoint(home.settings).get("offsets"), timeout=120, interval=0.3,
               what="a first checkpoint", on_timeout=scorer.log_tail)
    _fill(home.settings.checkpoint_dir)

    def died() -> bool:
        if not scorer.alive:
            return True
        feed.round()
        return False

    wait_until(died, timeout=60, interval=0.5, what="the scorer to stop on a full disk", on_timeout=scorer.log_tail)
    # Loudly: a failed exit with the reason in its log, not a silent stop.
    assert scorer.proc.returncode not in (0, -signal.SIGKILL), scorer.log_tail()
    assert "No space left on device" in scorer.log_since_start()
    feed.round()

    (home.settings.checkpoint_dir / "filler").unlink()
    restarted = home.job("stream", "score", log_name="scorer", **FAST)
    feed.round()
    wait_until(lambda: all((p := store.get(s)) is not None and pd.Timestamp(p.data_timestamp) >= feed.sent[s][-1][2]
                           for s in SYMBOLS), timeout=120, interval=0.3, what="the restarted scorer serving",
               on_timeout=restarted.log_tail)
    restarted.stop()
    assert restarted.proc.returncode == 0, restarted.log_tail()
    assert "restored" in restarted.log_since_start()
    check_invariants(home, feed)
