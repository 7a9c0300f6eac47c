"""Fuzz: 10,000 generated bad records mixed into a stream of good ones. Every record is
accounted for (stored, or quarantined with a reason) and the query keeps running."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.platform.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BAD_RECORDS = 10_000
GOOD_RECORDS = 5_000
KNOWN_REASONS = {
    "invalid_json", "unsupported_schema_version", "invalid_symbol",
    "invalid_price", "invalid_volume", "invalid_bid_ask", "ts_in_future", "duplicate_msg_id", "late",
}


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _good(i: int, now: datetime) -> dict:
    ts = now - timedelta(milliseconds=GOOD_RECORDS - i)
    return {
        "schema_version": 1, "msg_id": f"good-{i}", "symbol": f"FZ{i % 7}", "ts": _iso(ts),
        "price": 100.0 + (i % 50) / 10, "volume": float(1 + i % 9), "bid": None, "ask": None,
        "source": "fuzz", "produced_at": _iso(now),
    }


def _bad(i: int, rng: random.Random, now: datetime) -> bytes:
    """One bad record of a randomly chosen kind; every one is distinct."""
    tick = _good(i, now) | {"msg_id": f"bad-{i}", "source": "fuzz-bad"}
    kind = rng.randrange(14)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + f"#{i}".encode()
    if kind == 1:
        return json.dumps(tick)[: rng.randrange(1, 30)].encode() + f"#{i}".encode()
    if kind == 2:
        del tick[rng.choice(["msg_id", "symbol", "ts", "price", "volume", "source"])]
    elif kind == 3:
        tick[rng.choice(["price", "volume", "ts"])] = rng.choice([None, "abc", [1, 2], {"x": 1}, True])
    elif kind == 4:
        # Symbols follow tickcast.core.symbols.SYMBOL_PATTERN: 1-32 of letters, digits and .-^=_:
        tick["symbol"] = rng.choice(["", "X" * 33, "SP ACE", "$$$", "É", "A/B", None, [1], {"s": 1}])
    elif kind == 5:
        tick["ts"] = rng.choice(["yesterday", "2024-13-45T99:00:00Z", "", "0000-00-00"])
    elif kind == 6:
        tick["ts"] = _iso(now + timedelta(days=rng.randrange(1, 3650)))
    elif kind == 7:
        tick["price"] = rng.choice([-1.0, 0.0, -1e-9, float("nan"), float("inf"), float("-inf")])
    elif kind == 8:
        tick["volume"] = rng.choice([-1.0, float("nan"), float("-inf")])
    elif kind == 9:
        tick["bid"], tick["ask"] = 101.0, 100.0
    elif kind == 10:
        tick["schema_version"] = rng.choice([0, 2, 99, -1, "1"])
    elif kind == 11:
        tick["msg_id"] = f"good-{rng.randrange(GOOD_RECORDS)}"  # a replayed good message
        tick["nonce"] = i
        return json.dumps(tick).encode()
    elif kind == 12:
        return json.dumps([tick, i]).encode()
    else:
        tick["bid"] = rng.choice([-5.0, float("nan")])
    tick["nonce"] = i
    return json.dumps(tick).encode()


def test_every_fuzzed_record_is_stored_or_quarantined(e2e):
    settings = e2e.settings
    ingest = e2e.ingest()
    rng = random.Random(20261121)
    now = datetime.now(UTC)
    producer = Producer({"bootstrap.servers": e2e.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 20})
    bad_seen, good_seen = 0, 0
    # Good ones first within each stretch, so a replayed good msg_id always has its original.
    for i in range(GOOD_RECORDS):
        producer.produce(e2e.topic, key=f"FZ{i % 7}".encode(), value=json.dumps(_good(i, now)).encode())
        good_seen += 1
        for _ in range(2):
            producer.produce(e2e.topic, key=b"FZBAD", value=_bad(bad_seen, rng, now))
            bad_seen += 1
    assert producer.flush(60) == 0
    assert (good_seen, bad_seen) == (GOOD_RECORDS, BAD_RECORDS)
    produced = GOOD_RECORDS + BAD_RECORDS

    wait_until(
        lambda: delta_count(settings, "ticks") + delta_count(settings, "quarantine") >= produced,
        timeout=900, what=f"all {produced} records in ticks or quarantine", on_timeout=ingest.log_tail,
    )
    assert ingest.alive, ingest.log_tail()

    ticks = delta_rows(settings, "ticks").to_pandas()
    quarantine = delta_rows(settings, "quarantine").to_pandas()
    assert len(ticks) + len(quarantine) == produced
    # Every good record stored once; every bad one quarantined.
    assert sorted(ticks["msg_id"]) == sorted(f"good-{i}" for i in range(GOOD_RECORDS))
    assert len(quarantine) == BAD_RECORDS
    assert quarantine["reason"].notna().all()
    unexplained = {
        r for r in quarantine["reason"]
        if r not in KNOWN_REASONS and not r.startswith(("missing_or_invalid:", "invalid_timestamp:", "expectation:"))
    }
    assert not unexplained
    # The kinds of bad input show up as different reasons, not one catch-all.
    assert len(set(quarantine["reason"])) >= 8
