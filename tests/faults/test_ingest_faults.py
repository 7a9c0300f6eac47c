"""The ingest SIGKILLed at each of its named fault points as the platform runs it, each query in a
process of its own (`tickcast stream ingest --query ticks`, `--query bars`), then run once without
a fault with both queries in one process (`tickcast stream ingest`, from the checkpoints the two
left: the same checkpoints and transaction ids, query by query). Afterwards:

* every record of the topic is one row of ``ticks`` or ``quarantine`` (by Kafka position), with
  the reason its kind calls for (malformed, duplicate, late, from the future), and only a
  duplicate's copies share a msg_id with a stored tick;
* the bars of each interval are a re-fold of the stored ticks;
* the features the stream computed, micro-batch by micro-batch across the kills, equal the batch
  backfill's over the stored bars (with the market index's history arriving after a symbol's, so
  that symbol's market features had to be recomputed).

One chain rather than a test per point or per property: a Spark start costs 30-60 s on a busy
2-core machine, and a chain is the "repeated kills" case as well. Each query is killed at an
uncommitted point before any write (``ingest.ticks.batch_start``), between its writes (the ticks
append, the feed watermarks, one bar MERGE of two, the features MERGE before the Feast push) and
at a committed point (``ingest.query_idle``); each kill is checked to have happened at its point
(its log line, SIGKILL, and what its checkpoint and the Delta logs hold), and each restart replays
what the kill left behind. The feed comes in two parts: the second (with ticks behind the feed's
watermark, which the first part's batches saved) is produced once both queries died at their
committed point, and only the last run reads it."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer

from tests.faults.conftest import FaultHome, Job
from tests.invariants import (
    assert_bars_are_a_refold,
    assert_features_equal_the_backfill,
    checkpoint_batches,
    delta_frame,
    topic_records,
)
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.catalog.topics import topic_message_count
from tickcast.core.faults import FaultPoint
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.platform.processes import wait_until

pytestmark = pytest.mark.slow

ENV = {
    # Small ticks batches, so the first part of the feed takes several (each kill finds a batch).
    "TICKCAST_INGEST_MAX_OFFSETS_PER_TRIGGER": "600", "TICKCAST_INGEST_TRIGGER_SECONDS": "1",
    "TICKCAST_BARS_TRIGGER_SECONDS": "1",
    # A lookback wide enough that the stream sees TRAILING_BARS daily bars across weekends.
    "TICKCAST_FEATURES_LOOKBACK_FACTOR": "2000",
    "TICKCAST_INGEST_NICENESS": "0", "TICKCAST_BARS_NICENESS": "0",
}
# The killed runs skip Feast (importing it costs each start seconds; features.before_push stands
# before the push either way); the last run pushes, as the platform does.
KILLED_ENV = {**ENV, "TICKCAST_FEAST_PUSH_ENABLED": "false"}

DAYS = 300
# The replayed daily histories: (symbol, seed, part of the feed). The index (MKT) arrives after
# AAA, so AAA's market features must be recomputed when it does.
HISTORIES = (("AAA", 11, 1), ("MKT", 12, 1), ("BBB", 13, 2))
BUNDLES = {1: range(0, 60), 2: range(60, 90)}
FEED_KEY = b"E2E"
FEED_SOURCE = "e2e"
# Malformed records, one per bundle in turn: (what is done to a good tick, the reason it must get).
MALFORMED_KINDS: tuple[tuple[str, str], ...] = (
    ("not_json", "invalid_json"),
    ("negative_price", "invalid_price"),
    ("bad_symbol", "invalid_symbol"),
    ("schema_version", "unsupported_schema_version"),
    ("bid_above_ask", "invalid_bid_ask"),
    ("no_volume", "missing_or_invalid:volume"),
)


# -- where each query dies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """A run of one query killed at ``point``: what its checkpoint and the Delta logs must show
    after it died (``in_flight``: offsets/N written, commits/N not; ``written`` and ``unwritten``:
    which of the query's writes of batch N are in the Delta logs, by transaction id)."""

    point: FaultPoint
    in_flight: bool
    written: tuple[str, ...] = ()
    unwritten: tuple[str, ...] = ()
    # The pass of the point it fires at (2: after the restart's replay committed).
    after: int = 1

    @property
    def fault(self) -> str:
        return f"{self.point.value}:kill:after={self.after}"


FIRST, SECOND = INTERVAL_NAMES
# The first kill leaves ticks in Delta, so the bars query's chain starts beside the ticks query's.
TICKS_KILLS = (
    # The first batch's ticks appended, its quarantine append not.
    Kill(FaultPoint.INGEST_TICKS_AFTER_APPEND, True, written=("ticks",), unwritten=("quarantine", "watermarks")),
    # That batch replayed (its ticks append skipped), its quarantine appended, its feed watermarks not saved.
    Kill(FaultPoint.INGEST_TICKS_BEFORE_WATERMARKS, True, written=("ticks",), unwritten=("watermarks",)),
    # That replay committed; the next batch planned, nothing of it written.
    Kill(FaultPoint.INGEST_TICKS_BATCH_START, True, unwritten=("ticks", "quarantine", "watermarks"), after=2),
    # Caught up with the first part of the feed: the committed point.
    Kill(FaultPoint.INGEST_QUERY_IDLE, False),
)
BARS_KILLS = (
    # The bars of the first interval MERGEd, the second's not.
    Kill(FaultPoint.INGEST_BARS_AFTER_MERGE, True, written=(f"bars_{FIRST}",),
         unwritten=(f"bars_{SECOND}", f"features_{FIRST}")),
    # That batch replayed: both bars' MERGEs, the first interval's features MERGEd, not pushed.
    Kill(FaultPoint.INGEST_FEATURES_BEFORE_PUSH, True, written=(f"bars_{FIRST}", f"bars_{SECOND}", f"features_{FIRST}"),
         unwritten=(f"features_{SECOND}",)),
    Kill(FaultPoint.INGEST_QUERY_IDLE, False),
)


def _written(settings, query: str, app_id: str, batch: int) -> set[str]:
    """Which writes of the query's batch ``batch`` the Delta logs (or the feed watermarks) hold."""
    from deltalake import DeltaTable

    def has(table: str, txn_app_id: str) -> bool:
        txn = DeltaTable(tables.table_path(settings, table)).transaction_versions().get(txn_app_id)
        return txn is not None and txn.version >= batch

    if query == "ticks":
        written = {name for name in (tables.TICKS, tables.QUARANTINE) if has(name, app_id)}
        saved = settings.checkpoint_dir / query / "feed-watermarks" / f"{batch}.json"
        return written | ({"watermarks"} if saved.exists() else set())
    return ({tables.bars(i) for i in INTERVAL_NAMES if has(tables.bars(i), app_id)}
            | {f"features_{i}" for i in INTERVAL_NAMES if has(tables.FEATURES, f"{app_id}-features-{i}")})


class KilledQuery:
    """One query in a process of its own, started with each of ``kills`` in turn, each run
    checked to have died at its point before the next starts."""

    def __init__(self, home: FaultHome, query: str, kills: tuple[Kill, ...]):
        self.home = home
        self.query = query
        self.kills = list(kills)
        self.root = home.settings.checkpoint_dir / query
        self.seen: list[str] = []
        self.job: Job = self._start()

    def _start(self) -> Job:
        return self.home.job("stream", "ingest", "--query", self.query, log_name=f"ingest-{self.query}",
                             fault=self.kills[0].fault, **KILLED_ENV)

    @property
    def done(self) -> bool:
        return not self.kills

    def poll(self) -> bool:
        """Whether every kill happened; checks a dead run's point and starts the next run."""
        if self.done or self.job.alive:
            return self.done
        kill, job = self.kills.pop(0), self.job
        assert job.proc is not None and job.proc.returncode == -signal.SIGKILL, job.log_tail()
        assert f"fault injected at {kill.point.value}" in job.log_since_start(), job.log_tail()
        planned, committed = (checkpoint_batches(self.root / "spark" / d) for d in ("offsets", "commits"))
        assert planned, job.log_tail()
        batch = planned[-1]
        in_flight = not committed or committed[-1] < batch
        written = _written(self.home.settings, self.query, (self.root / "tickcast-app-id").read_text().strip(), batch)
        state = f"{self.query} killed at {kill.point.value}: batch {batch} in flight {in_flight}, written {sorted(written)}"
        self.seen.append(state)
        assert in_flight == kill.in_flight, state
        assert set(kill.written) <= written and not set(kill.unwritten) & written, state
        if self.kills:
            self.job = self._start()
        return self.done


# -- the feed -----------------------------------------------------------------------------------------


def _daily_file(directory: Path, symbol: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2022-01-03", periods=DAYS, freq="D")
    close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.012, DAYS))), 4)
    open_ = np.round(close * (1 + rng.normal(0, 0.004, DAYS)), 4)
    frame = pd.DataFrame({
        "Date": dates.strftime("%Y-%m-%d"), "Open": open_,
        "High": np.round(np.maximum(open_, close) * 1.006, 4),
        "Low": np.round(np.minimum(open_, close) * 0.994, 4),
        "Close": close, "Adj Close": close, "Volume": rng.integers(10_000, 90_000, DAYS),
    })
    path = directory / f"{symbol.lower()}.csv"
    frame.to_csv(path, index=False)
    return path


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Feed:
    """Bundles of records of the feed (e2e, E2E), all keyed ``E2E`` (one partition, in order): a
    good tick, a malformed record, a copy of a good tick (the one just sent, or one ten bundles
    back: an earlier batch, or an earlier run), every third bundle a tick from the future and,
    with ``late``, a tick an hour behind the feed's watermark. ``expected`` maps each record's
    Kafka position to the quarantine reason it must get (None: stored in ``ticks``)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5})
        self.expected: dict[tuple[int, int], str | None] = {}
        self.errors: list[str] = []
        self.good: list[bytes] = []

    def _send(self, value: bytes, reason: str | None) -> None:
        def delivered(err, msg) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.expected[(msg.partition(), msg.offset())] = reason

        self.producer.produce(self.topic, key=FEED_KEY, value=value, on_delivery=delivered)

    @staticmethod
    def _tick(msg_id: str, ts: datetime, **overrides) -> dict:
        return {
            "schema_version": 1, "msg_id": msg_id, "symbol": "E2E", "ts": _iso(ts), "price": 100.0,
            "volume": 1.0, "bid": None, "ask": None, "source": FEED_SOURCE, "produced_at": _iso(datetime.now(UTC)),
        } | overrides

    def bundle(self, i: int, late: bool) -> None:
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
        self._send(self.good[-1] if i % 2 else self.good[max(0, i - 10)], "duplicate_msg_id")
        if i % 3 == 0:
            self._send(json.dumps(self._tick(f"e2e-future-{i}", now + timedelta(days=1))).encode(), "ts_in_future")
        if late:
            self._send(json.dumps(self._tick(f"e2e-late-{i}", now - timedelta(hours=1))).encode(), "late")

    def flush(self) -> None:
        assert self.producer.flush(60) == 0
        assert not self.errors, self.errors


def produce(home: FaultHome, feed: Feed, part: int, directory: Path) -> None:
    """The part's daily histories (``tickcast produce replay``) and the feed's bundles."""
    for symbol, seed, in_part in HISTORIES:
        if in_part == part:
            home.run_cli("produce", "replay", str(_daily_file(directory, symbol, seed)), "--symbol", symbol)
        if symbol == "AAA" and part == 1:
            for i in BUNDLES[part]:
                feed.bundle(i, late=False)
    if part == 2:
        for i in BUNDLES[part]:
            feed.bundle(i, late=True)
    feed.flush()


# -- the chain -----------------------------------------------------------------------------------------


# Ten Spark starts (seven killed runs, two side by side, the last run, the backfill, the
# comparison's session) on a machine that may be busy with more than this test: 10 min at a load
# of 8, above the suite's 900 s per test on a busier machine.
@pytest.mark.timeout(1500)
def test_ingest_killed_at_each_point_in_turn_stays_exactly_once_and_equals_the_backfill(fault_home, spark, tmp_path):
    home = fault_home(partitions=2)
    settings = home.settings
    feed = Feed(home.bootstrap, home.topics["ticks"])
    produce(home, feed, 1, tmp_path)

    ticks_query = KilledQuery(home, "ticks", TICKS_KILLS)
    bars_query = KilledQuery(home, "bars", BARS_KILLS)
    wait_until(lambda: all([ticks_query.poll(), bars_query.poll()]), timeout=1200, interval=0.5,
               what="each query killed at each of its points",
               on_timeout=lambda: f"{ticks_query.seen}\n{bars_query.seen}\n{ticks_query.job.log_tail()}\n"
                                  f"{bars_query.job.log_tail()}")
    print("\n".join(ticks_query.seen + bars_query.seen))

    # The second part, once the first is stored and its watermarks saved: its late ticks are late.
    produce(home, feed, 2, tmp_path)
    produced = topic_message_count(home.bootstrap, home.topics["ticks"])
    job = home.job("stream", "ingest", log_name="ingest", **ENV)

    def caught_up() -> bool:
        assert job.alive, job.log_tail()
        stored = delta_count(settings, tables.TICKS)
        bars = [delta_rows(settings, tables.bars(i), ["trades"]) for i in INTERVAL_NAMES]
        return (stored + delta_count(settings, tables.QUARANTINE) >= produced
                and all(b is not None and b.column("trades").to_pandas().sum() >= stored for b in bars))

    wait_until(caught_up, timeout=600, interval=1, what=f"all {produced} records stored or quarantined, and in bars",
               on_timeout=job.log_tail)
    job.stop()  # between batches: the last batch's features are in
    assert job.proc is not None and job.proc.returncode == 0, job.log_tail()

    # Exactly once, by Kafka position: every record of the topic is one row of ticks or quarantine.
    records = topic_records(home.bootstrap, home.topics["ticks"])
    assert len(records) == produced
    ticks = delta_frame(settings, tables.TICKS,
                        ["msg_id", "symbol", "ts", "price", "volume", "kafka_partition", "kafka_offset"])
    quarantine = delta_frame(settings, tables.QUARANTINE,
                             ["reason", "stage", "msg_id", "kafka_partition", "kafka_offset"])
    assert set(quarantine["stage"]) == {"ingest"}, quarantine["stage"].value_counts().to_dict()
    positions = pd.concat([ticks[["kafka_partition", "kafka_offset"]], quarantine[["kafka_partition", "kafka_offset"]]])
    assert not positions.duplicated().any(), positions[positions.duplicated(keep=False)]
    assert set(map(tuple, positions.to_numpy().tolist())) == set(records)

    # Each record of the feed got the reason its kind calls for (None: stored); the histories all stored.
    stored_at = set(map(tuple, ticks[["kafka_partition", "kafka_offset"]].to_numpy().tolist()))
    reason_at = {(p, o): r for p, o, r in quarantine[["kafka_partition", "kafka_offset", "reason"]].itertuples(index=False)}
    expected = {position: feed.expected.get(position) for position in records}
    assert {position: reason_at.get(position) for position in records} == expected
    assert {position for position, reason in expected.items() if reason is None} == stored_at
    assert set(reason_at.values()) == {reason for _, reason in MALFORMED_KINDS} | {
        "duplicate_msg_id", "ts_in_future", "late"}
    assert len(ticks) == len(HISTORIES) * DAYS * 4 + sum(len(r) for r in BUNDLES.values())

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

    # The features the stream computed equal the backfill's; AAA's market features were
    # recomputed once the index's history arrived after its own.
    streamed = assert_features_equal_the_backfill(
        spark, settings, lambda: home.run_cli("features", "backfill", timeout=900))
    aaa = streamed.where("symbol = 'AAA' AND interval = '1d'").toPandas()
    assert aaa["market_beta"].notna().sum() == DAYS - 60
    assert aaa["return_252d"].notna().sum() == DAYS - 252
