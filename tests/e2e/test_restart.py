"""A SIGKILL mid-stream loses and duplicates nothing once the job is restarted: each query in a
process of its own (as the platform runs them) killed at committed and uncommitted points of its
micro-batches. The two queries in one process (`tickcast stream ingest` without --query) keep the
same checkpoints and transaction ids, query by query."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer

from tests.invariants import assert_bars_are_a_refold, delta_frame, topic_records
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.catalog.topics import topic_message_count
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.platform.processes import TICKCAST, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# -- each query in a process of its own, SIGKILLed at chosen points of its micro-batches ---------------
#
# The platform runs `tickcast stream ingest --query ticks` and `--query bars` as two programs. Here
# each is killed (its whole process group, the JVM with it) at a committed and at an uncommitted
# point of a micro-batch, seen in its Spark checkpoint (offsets/N is written when a batch is
# planned, commits/N when its foreachBatch returned) and in the Delta logs (each write of batch N
# carries the txn (app id, N)). Bad records (malformed, duplicate, late, future) are mixed into a
# synthetic feed the whole time, so the batches replayed after a kill hold them too.

KILL_POLL_SECONDS = 0.01
INJECT_EVERY_SECONDS = 0.5
INJECTED_KEY = b"E2E"
INJECTED_SOURCE = "e2e"
# Malformed records, one per bundle in turn: (what is done to a good tick, the reason it must get).
MALFORMED_KINDS: tuple[tuple[str, str], ...] = (
    ("not_json", "invalid_json"),
    ("negative_price", "invalid_price"),
    ("bad_symbol", "invalid_symbol"),
    ("schema_version", "unsupported_schema_version"),
    ("bid_above_ask", "invalid_bid_ask"),
    ("no_volume", "missing_or_invalid:volume"),
)


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _batch_ids(directory: Path) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    except FileNotFoundError:
        return []


class DeltaTxns:
    """The (txn app id, version) pairs in a Delta table's JSON log, read incrementally (cheap
    enough to poll every few milliseconds)."""

    def __init__(self, table_dir: Path):
        self.log_dir = table_dir / "_delta_log"
        self.read: set[str] = set()
        self.txns: set[tuple[str, int]] = set()

    def has(self, app_id: str, version: int) -> bool:
        try:
            names = os.listdir(self.log_dir)
        except FileNotFoundError:
            return False
        for name in sorted(n for n in names if n.endswith(".json") and n not in self.read):
            try:
                actions = [json.loads(line) for line in (self.log_dir / name).read_text().splitlines() if line]
            except (FileNotFoundError, ValueError):
                continue  # not there yet as a whole: read it next time
            self.read.add(name)
            self.txns.update((a["txn"]["appId"], int(a["txn"]["version"])) for a in actions if "txn" in a)
        return (app_id, version) in self.txns


@dataclass(frozen=True)
class Point:
    """Where a query stood: its newest planned (offsets) and committed (commits) batch, and
    which of its tables already hold the planned batch's write."""

    planned: int
    committed: int
    written: tuple[str, ...] = ()

    @property
    def in_flight(self) -> bool:
        return self.planned == self.committed + 1

    def __str__(self) -> str:
        state = "committed" if not self.in_flight else f"uncommitted, written to [{', '.join(self.written)}]"
        return f"batch {self.planned} {state}"


@dataclass(frozen=True)
class Target:
    """A point to SIGKILL a query at: when ``wanted`` holds of what is seen while polling, and
    held of the point the dead process left behind."""

    name: str
    wanted: Callable[[Point], bool]


class KilledQuery:
    """One streaming query in a process of its own, killed at each of ``targets`` in turn and
    restarted after each kill."""

    MAX_ATTEMPTS = 4
    # From a (re)start to the kill at the next target: a Spark start, a batch replayed and one
    # more, on a machine that may be busy with more than this test.
    TARGET_TIMEOUT_SECONDS = 720

    def __init__(self, e2e, query: str, tables_written: tuple[str, ...], targets: list[Target],
                 env: dict[str, str]):
        self.e2e = e2e
        self.query = query
        self.root = e2e.settings.checkpoint_dir / query
        self.delta = {name: DeltaTxns(Path(tables.table_path(e2e.settings, name))) for name in tables_written}
        self.targets = list(targets)
        self.env = env
        # (target, the point left behind, seconds since the query was made)
        self.kills: list[tuple[str, Point, float]] = []
        self.missed: list[tuple[str, Point, float]] = []
        self.born = time.monotonic()
        self.proc = None
        self.committed_at_start = -1

    def start(self) -> None:
        # A restarted query must commit (its replay) before the next kill; a new one need not.
        self.committed_at_start = self.point().committed if self.proc is not None else -2
        self.started_at = time.monotonic()
        self.proc = self.e2e.ingest("--query", self.query, log_name=f"ingest-{self.query}", **self.env)

    @property
    def running(self) -> bool:
        """Whether its query has started (Spark wrote the checkpoint's metadata)."""
        return (self.root / "spark" / "metadata").exists()

    def point(self) -> Point:
        planned = _batch_ids(self.root / "spark" / "offsets")
        committed = _batch_ids(self.root / "spark" / "commits")
        point = Point(planned[-1] if planned else -1, committed[-1] if committed else -1)
        if not point.in_flight:
            return point
        app_id = (self.root / "tickcast-app-id").read_text().strip()
        written = tuple(name for name, txns in self.delta.items() if txns.has(app_id, point.planned))
        return Point(point.planned, point.committed, written)

    @property
    def done(self) -> bool:
        return not self.targets

    def poll(self) -> None:
        """Kill the process if it stands at the current target (after a restart, only once it
        committed a batch of its own); restart it after a kill."""
        assert self.proc is not None and self.proc.alive, f"{self.query} died:\n{self.proc.log_tail()}"
        if self.done:
            return
        assert time.monotonic() - self.started_at < self.TARGET_TIMEOUT_SECONDS, (
            f"{self.query}: not at {self.targets[0].name} within {self.TARGET_TIMEOUT_SECONDS}s of its start "
            f"(kills so far {self.kills}, missed {self.missed}):\n{self.proc.log_tail()}")
        seen = self.point()
        if seen.committed <= self.committed_at_start or not self.targets[0].wanted(seen):
            return
        self.proc.kill()
        left = self.point()  # the process is gone: this is what its restart finds
        target = self.targets[0]
        record = (target.name, left, round(time.monotonic() - self.born, 1))
        if target.wanted(left):
            self.kills.append(record)
            self.targets.pop(0)
        else:  # it moved on between the look and the kill: try again after the restart
            self.missed.append(record)
            attempts = sum(1 for name, *_ in self.missed if name == target.name)
            assert attempts < self.MAX_ATTEMPTS, f"{self.query}: never killed at {target.name}: {self.missed}"
        self.start()


class Injector(threading.Thread):
    """Bundles of records mixed into the feed every ``INJECT_EVERY_SECONDS``, all keyed
    ``E2E`` (one partition, in order): a good tick of the feed (e2e, E2E), a malformed record,
    a copy of an earlier good tick, a tick from the future and, once the ticks query saved a
    watermark for the feed, a tick an hour behind it. ``expected`` maps each record's Kafka
    position to the quarantine reason it must get (None: stored in ``ticks``)."""

    def __init__(self, bootstrap: str, topic: str, watermarks_dir: Path):
        super().__init__(daemon=True)
        self.topic = topic
        self.watermarks_dir = watermarks_dir
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5})
        self.expected: dict[tuple[int, int], str | None] = {}
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.good: list[bytes] = []
        self.late_from: int | None = None

    def _send(self, value: bytes, reason: str | None) -> None:
        def delivered(err, msg) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.expected[(msg.partition(), msg.offset())] = reason

        self.producer.produce(self.topic, key=INJECTED_KEY, value=value, on_delivery=delivered)

    def _tick(self, msg_id: str, ts: datetime, **overrides) -> dict:
        return {
            "schema_version": 1, "msg_id": msg_id, "symbol": "E2E", "ts": _iso(ts), "price": 100.0,
            "volume": 1.0, "bid": None, "ask": None, "source": INJECTED_SOURCE, "produced_at": _iso(datetime.now(UTC)),
        } | overrides

    def _feed_has_watermark(self) -> bool:
        files = sorted((p for p in self.watermarks_dir.glob("*.json") if p.stem.isdigit()), key=lambda p: int(p.stem))
        try:
            rows = json.loads(files[-1].read_text()) if files else []
        except (FileNotFoundError, ValueError):
            return False
        return any(r["source"] == INJECTED_SOURCE and r["symbol"] == "E2E" for r in rows)

    def bundle(self, i: int) -> None:
        now = datetime.now(UTC)
        good = json.dumps(self._tick(f"e2e-good-{i}", now, price=100.0 + (i % 17) * 0.25,
                                     volume=float(1 + i % 7))).encode()
        self._send(good, None)
        self.good.append(good)
        kind, reason = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        bad = self._tick(f"e2e-bad-{i}", now)
        if kind == "not_json":
            self._send(f'{{"msg_id": "e2e-bad-{i}", '.encode(), reason)
        else:
            if kind == "negative_price":
                bad["price"] = -1.0
            elif kind == "bad_symbol":
                bad["symbol"] = "NOT A SYMBOL"
            elif kind == "schema_version":
                bad["schema_version"] = 99
            elif kind == "bid_above_ask":
                bad["bid"], bad["ask"] = 101.0, 100.0
            else:
                del bad["volume"]
            self._send(json.dumps(bad).encode(), reason)
        # A copy of the tick just sent (most often in the same micro-batch) or of one a few
        # seconds old (an earlier micro-batch): both are duplicates of a stored tick.
        self._send(self.good[-1] if i % 2 else self.good[max(0, i - 10)], "duplicate_msg_id")
        if i % 3 == 0:
            self._send(json.dumps(self._tick(f"e2e-future-{i}", now + timedelta(days=1))).encode(), "ts_in_future")
        if self.late_from is None and self._feed_has_watermark():
            self.late_from = i
        if self.late_from is not None:
            self._send(json.dumps(self._tick(f"e2e-late-{i}", now - timedelta(hours=1))).encode(), "late")
        self.producer.poll(0)

    def run(self) -> None:
        i = 0
        while not self.stopping.wait(INJECT_EVERY_SECONDS):
            self.bundle(i)
            i += 1

    def finish(self) -> None:
        self.stopping.set()
        self.join(30)
        assert self.producer.flush(60) == 0
        assert not self.errors, self.errors


# Four Spark starts of the ticks query one after the other, three of the bars query beside them:
# a few minutes on a quiet machine, more than the suite's 900 s per test when the machine is busy.
@pytest.mark.timeout(1500)
def test_each_query_sigkilled_at_committed_and_uncommitted_points_stays_exactly_once(e2e):
    """The ticks query killed after its ticks append (commits/N missing), with only offsets/N
    written, and right after commits/N; the bars query between its two bar MERGEs and right
    after commits/N; each restarted. Then every record is stored or quarantined exactly once,
    with the reason its kind calls for, and the bars are a re-fold of the stored ticks."""
    settings = e2e.settings
    # Feast is not what this test is about, and importing it costs every bars start seconds.
    env = {"TICKCAST_FEAST_PUSH_ENABLED": "false"}
    ticks_query = KilledQuery(e2e, "ticks", (tables.TICKS, tables.QUARANTINE), [
        # Its ticks append done and its quarantine append not (a batch without rejects has none).
        Target("ticks uncommitted, after its ticks append",
               lambda p: p.in_flight and p.written == (tables.TICKS,)),
        Target("ticks uncommitted, before any write", lambda p: p.in_flight and not p.written),
        Target("ticks committed", lambda p: not p.in_flight and p.committed >= 0),
    ], env)
    # The bars query MERGEs the intervals in INTERVAL_NAMES order.
    first, second = (tables.bars(i) for i in INTERVAL_NAMES)
    bars_query = KilledQuery(e2e, "bars", (first, second), [
        Target(f"bars uncommitted, between its {first} and {second} MERGEs",
               lambda p: p.in_flight and p.written == (first,)),
        Target("bars committed", lambda p: not p.in_flight and p.committed >= 0),
    ], env)
    ticks_query.start()
    bars_query.start()
    # The feed starts with the queries, not with their processes, so their first batches are
    # not all the ticks of a Spark start.
    wait_until(lambda: ticks_query.running and bars_query.running, timeout=480, what="both queries started",
               interval=0.5, on_timeout=lambda: ticks_query.proc.log_tail() + bars_query.proc.log_tail())
    feed = subprocess.Popen(
        [TICKCAST, "produce", "synthetic", "--symbols", "20", "--rate", "40", "--seconds", "0", "--seed", "5"],
        env=e2e.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    injector = Injector(e2e.bootstrap, e2e.topic, ticks_query.root / "feed-watermarks")
    injector.start()
    try:
        while not (ticks_query.done and bars_query.done):
            ticks_query.poll()
            bars_query.poll()
            time.sleep(KILL_POLL_SECONDS)
        # Both restarted for the last time; the feeds stop once late ticks are among what they sent.
        wait_until(lambda: injector.late_from is not None, timeout=600, what="a watermark of the feed (e2e, E2E)",
                   interval=0.5, on_timeout=ticks_query.proc.log_tail)
        injector.finish()
        feed.send_signal(signal.SIGTERM)
        _, feed_err = feed.communicate(timeout=120)
        assert feed.returncode == 0, feed_err
        produced = topic_message_count(e2e.bootstrap, e2e.topic)

        def caught_up() -> bool:
            assert ticks_query.proc.alive and bars_query.proc.alive
            stored = delta_count(settings, "ticks")
            bars = [delta_rows(settings, tables.bars(i), ["trades"]) for i in INTERVAL_NAMES]
            return (stored + delta_count(settings, "quarantine") >= produced
                    and all(b is not None and b.column("trades").to_pandas().sum() >= stored for b in bars))

        # Generous: the bars query runs niced (TICKCAST_BARS_NICENESS) on a machine that may be busy.
        wait_until(caught_up, timeout=900, what=f"all {produced} records stored or quarantined, and in bars",
                   interval=0.5, on_timeout=lambda: ticks_query.proc.log_tail() + bars_query.proc.log_tail())
    finally:
        injector.stopping.set()
        if feed.poll() is None:
            feed.kill()
    # Both wind down (between batches) while the tables are checked.
    ticks_query.proc.request_stop()
    bars_query.proc.request_stop()
    kills = ticks_query.kills + bars_query.kills
    print("\n".join(f"{seconds:6.1f}s killed at {name}: {point}" for name, point, seconds in kills))
    print("missed:", ticks_query.missed + bars_query.missed)

    # Exactly once, by Kafka position: every record of the topic is one row of ticks or quarantine.
    records = topic_records(e2e.bootstrap, e2e.topic)
    ticks = delta_frame(settings, "ticks", ["msg_id", "symbol", "ts", "price", "volume", "kafka_partition", "kafka_offset"])
    quarantine = delta_frame(settings, "quarantine", ["reason", "stage", "msg_id", "kafka_partition", "kafka_offset"])
    assert set(quarantine["stage"]) == {"ingest"}, quarantine["stage"].value_counts().to_dict()
    positions = pd.concat([ticks[["kafka_partition", "kafka_offset"]], quarantine[["kafka_partition", "kafka_offset"]]])
    assert not positions.duplicated().any(), positions[positions.duplicated(keep=False)]
    assert set(map(tuple, positions.to_numpy().tolist())) == set(records)

    # Quarantine with reason: each injected record got its reason (None: stored), the feed's all stored.
    stored_at = set(map(tuple, ticks[["kafka_partition", "kafka_offset"]].to_numpy().tolist()))
    reason_at = {(p, o): r for p, o, r in quarantine[["kafka_partition", "kafka_offset", "reason"]].itertuples(index=False)}
    expected = {position: injector.expected.get(position) for position in records}
    got = {position: reason_at.get(position) for position in records}
    assert got == expected
    assert {position for position, reason in expected.items() if reason is None} == stored_at
    assert set(reason_at.values()) == {reason for _, reason in MALFORMED_KINDS} | {
        "duplicate_msg_id", "ts_in_future", "late"}

    # By msg_id: each produced one is stored once or quarantined, and only a duplicate's copies are both.
    produced_ids = {msg_id for msg_id in records.values() if msg_id is not None}
    assert ticks["msg_id"].is_unique
    stored_ids, quarantined_ids = set(ticks["msg_id"]), set(quarantine["msg_id"].dropna())
    assert stored_ids | quarantined_ids == produced_ids
    in_both = quarantine[quarantine["msg_id"].isin(stored_ids)]
    assert set(in_both["reason"]) == {"duplicate_msg_id"}
    assert set(in_both["msg_id"]) == {records[p] for p, reason in expected.items() if reason == "duplicate_msg_id"}
    assert quarantine.loc[~quarantine["msg_id"].isin(stored_ids), "msg_id"].dropna().is_unique

    # Replay determinism: the bars are a batch re-fold of the stored ticks.
    assert_bars_are_a_refold(settings, ticks)
