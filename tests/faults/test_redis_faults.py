"""Redis stopped under the two parts that use it (by configuration): the API's rate-limit
counters and the Feast online store. A real redis-server on loopback is paused (SIGSTOP: it
accepts and never answers), killed and started again on the same port (empty, as a restarted
Redis without persistence is). The API answers 2xx, 429 or 503 with a message, never 500, and
still limits; the stream keeps storing ticks and bars; each part reports the fault as a
pipeline event and uses Redis again once it is back, the online features equal to the
offline ones."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from tests.faults.conftest import create_topics
from tests.invariants import Events
from tickcast.core.settings import Settings
from tickcast.platform.processes import wait_until
from tickcast.platform.redis_server import RedisProcess


@pytest.fixture
def redis_server(tmp_path: Path):
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir).start()
    yield server
    server.stop()


# --- the API's rate limits -----------------------------------------------------------------------


def test_the_api_limits_per_process_while_redis_is_down_and_shares_again_once_back(
        settings: Settings, kafka_bootstrap: str, redis_server: RedisProcess, caplog) -> None:
    from serving.app import create_app
    from tickcast.auth.apikeys import ApiKeyStore

    alerts = f"alerts-{os.urandom(4).hex()}"
    create_topics(kafka_bootstrap, alerts)
    settings = settings.model_copy(update={
        "scorer_publish_kafka": False, "kafka_bootstrap_servers": kafka_bootstrap, "topic_alerts": alerts,
        "api_rate_limit_storage": f"redis://127.0.0.1:{redis_server.port}",
        "api_rate_limit_storage_retry_seconds": 0.2})
    _, key = ApiKeyStore(settings.api_keys_path).create("limited", ["read"], rate_limit="5/hour")
    events = Events(kafka_bootstrap, alerts)
    statuses: list[int] = []

    with caplog.at_level(logging.INFO, logger="serving.security"), \
            TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        def get() -> int:
            response = client.get("/api/v1/predictions", params={"symbols": "AAA"})
            assert response.status_code in (200, 429), response.text  # never a 500
            if response.status_code == 429:
                assert "rate limit of 5 per 1 hour reached" in response.json()["detail"]
                assert int(response.headers["Retry-After"]) >= 1
            statuses.append(response.status_code)
            return response.status_code

        def counted_in_redis() -> list[int]:
            return [int(redis_server.client().get(k)) for k in redis_server.client().keys("LIMITS*")]

        # Shared: the counter is Redis'.
        assert [get() for _ in range(3)] == [200] * 3
        assert counted_in_redis() == [3]

        # Paused: the first request waits out the timeout once, then memory counts, from 0 (each
        # worker allows the whole limit), and still refuses past the limit.
        redis_server.pause()
        assert [get() for _ in range(6)] == [200] * 5 + [429]
        assert any("rate-limit storage redis://127.0.0.1:" in r.getMessage() and "unavailable" in r.getMessage()
                   for r in caplog.records), caplog.text
        # A bad key is still a 401 (counted per address in memory), not a 500.
        assert client.get("/api/v1/predictions", params={"symbols": "AAA"},
                          headers={"X-API-Key": "tck_nope"}).status_code == 401
        wait_until(lambda: "firing" in events.of("rate_limit_storage_unavailable"), timeout=30, interval=0.2,
                   what="rate_limit_storage_unavailable reported")

        # Killed and started again on the same port (empty): used again once it answers.
        redis_server.kill()
        assert get() == 429  # memory's count, while nothing listens
        redis_server.start()
        wait_until(lambda: (events.of("rate_limit_storage_unavailable") or [""])[-1] == "resolved", timeout=30,
                   interval=0.2, what="rate_limit_storage_unavailable resolved")
        assert get() == 200  # Redis' fresh counter, not memory's used-up one
        assert counted_in_redis() == [1]
        assert any("answers again" in r.getMessage() for r in caplog.records), caplog.text
    events.close()
    assert 500 not in statuses


# --- the Feast online store ----------------------------------------------------------------------


@pytest.mark.slow  # Feast's import, and redis-py's own retries (with backoff) of a refused connection
def test_a_push_to_a_dead_online_store_is_kept_and_caught_up_once_it_is_back(
        tables_home: Settings, redis_server: RedisProcess) -> None:
    """push_online with Redis killed: OnlineStoreUnavailable within the bound, the rows kept; the
    next push once Redis is back writes them with its own."""
    from serving.app import create_app
    from tests.feature_repo.featurestore_helpers import feature_row, rows_frame, utc
    from tickcast.auth.apikeys import ApiKeyStore
    from tickcast.catalog import featurestore
    from tickcast.core.errors import Unavailable

    settings = tables_home.model_copy(update={
        "feast_online_store": "redis", "feast_redis_connection": f"127.0.0.1:{redis_server.port}",
        "feast_redis_timeout_seconds": 1.0})
    first = [feature_row("AAA", "1d", utc(2024, 1, 2), 1.0), feature_row("BBB", "1d", utc(2024, 1, 2), 2.0)]
    assert featurestore.push_online(settings, rows_frame(first)) == 2

    redis_server.kill()
    missed = [feature_row("AAA", "1d", utc(2024, 1, 3), 3.0), feature_row("BBB", "1d", utc(2024, 1, 3), 4.0)]
    with pytest.raises(featurestore.OnlineStoreUnavailable) as failed:
        featurestore.push_online(settings, rows_frame(missed))
    assert failed.value.waiting == 2
    # A read says the store cannot be read, rather than raising whatever Redis raised: the API's 503.
    with pytest.raises(Unavailable, match="the online feature store cannot be read"):
        featurestore.online_values(settings, "AAA", "1d")
    served = settings.model_copy(update={"scorer_publish_kafka": False})
    _, key = ApiKeyStore(served.api_keys_path).create("reader", ["read"])
    with TestClient(create_app(served), headers={"X-API-Key": key}) as client:
        response = client.get("/api/v1/predictions/AAA", params={"include_features": "true"})
    assert response.status_code == 503, response.text
    assert "the online feature store cannot be read" in response.json()["detail"]

    redis_server.start()  # empty: what was online is gone too
    later = [feature_row("CCC", "1d", utc(2024, 1, 3), 5.0)]
    assert featurestore.push_online(settings, rows_frame(later)) == 3
    online = featurestore.online_features(settings, ["AAA", "BBB", "CCC"], "1d").set_index("symbol")
    for row in (*missed, *later):
        assert online.loc[row["symbol"], "window_start"] == pd.Timestamp(row["window_start"])
        assert online.loc[row["symbol"], "return_1d"] == pytest.approx(row["return_1d"])
    # Nothing is kept once a push went through.
    assert featurestore.push_online(settings, rows_frame(later)) == 1


SYMBOLS = ("RA", "RB", "RC")


class Ticks:
    """A few ticks per round for each symbol, over the last minutes, in order."""

    def __init__(self, bootstrap: str, topic: str):
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.topic = topic
        self.sent = 0
        self.start = datetime.now(UTC) - timedelta(minutes=5)

    def round(self, symbols=SYMBOLS, n: int = 5) -> None:
        for _ in range(n):
            at = (self.start + timedelta(seconds=2 * self.sent)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for k, symbol in enumerate(symbols):
                value = {"schema_version": 1, "msg_id": f"{symbol}-{self.sent}", "symbol": symbol, "ts": at,
                         "price": 40.0 + k + (self.sent * 7) % 11 * 0.25, "volume": 1.0 + self.sent % 3, "bid": None,
                         "ask": None, "source": "faults", "produced_at": at}
                self.producer.produce(self.topic, key=symbol.encode(), value=json.dumps(value).encode())
            self.sent += 1
        assert self.producer.flush(30) == 0


def _offline_newest(settings: Settings, interval: str) -> pd.DataFrame:
    """What the offline store holds for each symbol's newest bar (Delta `features`)."""
    from tickcast.catalog import tables
    from tickcast.core.featureset import FEATURE_NAMES

    frame = tables.read_frame(settings, tables.FEATURES, ["symbol", "interval", "window_start", "window_end",
                                                          *FEATURE_NAMES])
    frame = frame[(frame["interval"] == interval) & frame["symbol"].isin(SYMBOLS)]
    return frame.sort_values("window_end").drop_duplicates("symbol", keep="last").set_index("symbol")


def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _online_equals_offline(settings: Settings) -> bool:
    from tickcast.catalog import featurestore
    from tickcast.core.featureset import feature_names
    from tickcast.core.intervals import INTERVAL_NAMES

    for interval in INTERVAL_NAMES:
        offline = _offline_newest(settings, interval)
        if sorted(offline.index) != sorted(SYMBOLS):
            return False
        online = featurestore.online_features(settings, list(SYMBOLS), interval).set_index("symbol")
        for symbol in SYMBOLS:
            if _utc(online.loc[symbol, "window_start"]) != _utc(offline.loc[symbol, "window_start"]):
                return False
            for name in feature_names(interval):
                want, got = offline.loc[symbol, name], online.loc[symbol, name]
                if pd.isna(want) != pd.isna(got) or (not pd.isna(want) and got != pytest.approx(want, rel=1e-6)):
                    return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_stream_keeps_storing_while_redis_is_down_and_catches_the_features_up(
        fault_home, redis_server: RedisProcess) -> None:
    from tickcast.catalog import tables
    from tickcast.catalog.tables import delta_count

    home = fault_home()
    settings = home.settings.model_copy(update={
        "feast_online_store": "redis", "feast_redis_connection": f"127.0.0.1:{redis_server.port}"})
    env = {"TICKCAST_FEAST_ONLINE_STORE": "redis", "TICKCAST_FEAST_REDIS_CONNECTION": f"127.0.0.1:{redis_server.port}",
           "TICKCAST_FEAST_REDIS_TIMEOUT_SECONDS": "1", "TICKCAST_INGEST_TRIGGER_SECONDS": "1",
           "TICKCAST_BARS_TRIGGER_SECONDS": "1", "TICKCAST_INGEST_NICENESS": "0", "TICKCAST_BARS_NICENESS": "0"}
    ticks = Ticks(home.bootstrap, home.topics["ticks"])
    events = Events(home.bootstrap, home.topics["alerts"])
    job = home.job("stream", "ingest", log_name="ingest", **env)

    def stored(count: int) -> bool:
        assert job.alive, job.log_tail()
        bars = tables.read_frame(settings, tables.bars("1m"), ["trades"])
        return delta_count(settings, tables.TICKS) >= count and bars["trades"].sum() >= count

    ticks.round()
    wait_until(lambda: stored(ticks.sent * len(SYMBOLS)) and _online_equals_offline(settings), timeout=300,
               interval=1, what="the first ticks stored and their features online", on_timeout=job.log_tail)

    redis_server.pause()
    ticks.round()
    wait_until(lambda: "firing" in events.of("feature_push_failed"), timeout=180, interval=0.5,
               what="feature_push_failed reported", on_timeout=job.log_tail)
    redis_server.kill()

    def batch_done_after_failure() -> bool:
        log = job.log_since_start()
        failed = log.find("features not pushed online")
        return failed >= 0 and "bars batch" in log[failed:]

    # The batch of the second round finished (its pushes failed, the stream went on), its ticks
    # and bars stored.
    wait_until(lambda: stored(ticks.sent * len(SYMBOLS)) and batch_done_after_failure(), timeout=180, interval=1,
               what="ticks and bars stored while Redis is down", on_timeout=job.log_tail)

    # Started again, empty: one tick of RA makes the next push, which brings RB and RC back too.
    redis_server.start()
    ticks.round(symbols=SYMBOLS[:1], n=1)
    wait_until(lambda: stored(ticks.sent * len(SYMBOLS) - 2) and _online_equals_offline(settings), timeout=180,
               interval=1, what="the online features caught up", on_timeout=job.log_tail)
    wait_until(lambda: events.of("feature_push_failed")[-1] == "resolved", timeout=60, interval=0.5,
               what="feature_push_failed resolved", on_timeout=job.log_tail)
    events.close()
    # Closed before the test's broker stops: an open producer would go on reconnecting to it.
    ticks.producer.close()
    job.stop()
    assert job.proc.returncode == 0, job.log_tail()


# --- the latest predictions ----------------------------------------------------------------------


@pytest.mark.slow  # the scorer's start (its Delta state, the baseline) and a pause of a few cycles
def test_the_scorer_keeps_scoring_while_the_predictions_redis_is_paused_and_catches_up(
        fault_home, redis_server: RedisProcess) -> None:
    """predictions_store=redis, Redis paused under the scorer: each write fails within its
    timeout, the scorer goes on scoring and publishing, reports `online_store_unavailable`, and
    writes the newest prediction of each symbol once Redis answers again."""
    from tests.faults.test_scorer_faults import FAST, SYMBOLS, Feed, read_from_the_start
    from tests.invariants import topic_messages
    from tickcast.catalog.online import PredictionStoreUnavailable, RedisOnlineStore

    home = fault_home()
    feed = Feed(home.bootstrap, home.topics["ticks"])
    read_from_the_start(home)
    events = Events(home.bootstrap, home.topics["alerts"])
    url = redis_server.url(2)
    scorer = home.job("stream", "score", log_name="scorer", TICKCAST_PREDICTIONS_STORE="redis",
                      TICKCAST_PREDICTIONS_REDIS_URL=url, **FAST)
    store = RedisOnlineStore(url, timeout=5)

    def serves(symbol: str, ts: pd.Timestamp) -> bool:
        return (found := store.get(symbol)) is not None and pd.Timestamp(found.data_timestamp) >= ts

    feed.round()
    wait_until(lambda: all(serves(s, feed.sent[s][-1][2]) for s in SYMBOLS), timeout=120, interval=0.3,
               what="the scorer serving from Redis", on_timeout=scorer.log_tail)
    redis_server.pause()
    try:
        feed.round()
        wait_until(lambda: "firing" in events.of("online_store_unavailable"), timeout=60, interval=0.2,
                   what="online_store_unavailable reported", on_timeout=scorer.log_tail)
        feed.round()
        newest = feed.sent[SYMBOLS[0]][-1][2]
        # Scored and published all the same: nothing waits on Redis for longer than its timeout.
        wait_until(lambda: any(pd.Timestamp(p["data_timestamp"]) >= newest and p["symbol"] == SYMBOLS[0]
                               for p in topic_messages(home.bootstrap, home.topics["predictions"])),
                   timeout=60, interval=0.5, what="the newest prediction on Kafka while Redis is paused",
                   on_timeout=scorer.log_tail)
        assert scorer.alive, scorer.log_tail()
        with pytest.raises(PredictionStoreUnavailable):
            RedisOnlineStore(url, timeout=0.2).get(SYMBOLS[0])
    finally:
        redis_server.resume()
    wait_until(lambda: all(serves(s, feed.sent[s][-1][2]) for s in SYMBOLS), timeout=60, interval=0.3,
               what="the kept predictions written once Redis answers", on_timeout=scorer.log_tail)
    wait_until(lambda: events.of("online_store_unavailable")[-1] == "resolved", timeout=30, interval=0.2,
               what="online_store_unavailable resolved", on_timeout=scorer.log_tail)
    assert f"online store redis://127.0.0.1:{redis_server.port}/2 not written" in scorer.log_since_start()
    events.close()
    scorer.stop()
    assert scorer.proc.returncode == 0, scorer.log_tail()
