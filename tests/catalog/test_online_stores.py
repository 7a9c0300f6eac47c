"""The online store in SQLite and in Redis: one interface, one rule (for each symbol the newest
data wins; of the same data, the later prediction), whatever order writes come in, and a Redis
that does not answer is a PredictionStoreUnavailable within its timeout, never a hang."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.serving.market_data import make_prediction
from tickcast.catalog.online import (
    OnlineStore,
    PredictionStore,
    PredictionStoreUnavailable,
    RedisOnlineStore,
    open_online_store,
)
from tickcast.core.predictions import Prediction
from tickcast.core.settings import Settings
from tickcast.platform.redis_server import RedisProcess

DAY0 = datetime(2026, 3, 2, 21, tzinfo=UTC)


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"), password="s3cret-for-tests").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PredictionStore:
    if request.param == "sqlite":
        return OnlineStore(tmp_path / "online.sqlite")
    server: RedisProcess = request.getfixturevalue("redis_process")
    server.client(db=3).flushdb()
    return RedisOnlineStore(server.url(3), timeout=2.0)


def _at(prediction: Prediction, data: datetime, predicted: datetime) -> Prediction:
    return prediction.model_copy(update={"data_timestamp": data, "predicted_at": predicted})


def test_the_newest_data_wins_then_the_latest_prediction(store: PredictionStore) -> None:
    base = make_prediction("AAPL", DAY0, 100.0)
    newest = _at(base, DAY0 + timedelta(days=1), DAY0 + timedelta(days=1, hours=1))
    store.upsert([newest])
    # Older data never replaces newer, even predicted later.
    store.upsert([_at(base, DAY0, DAY0 + timedelta(days=2))])
    assert store.get("AAPL") == newest
    # The same data predicted earlier does not either; predicted later, it does.
    store.upsert([_at(base, newest.data_timestamp, newest.predicted_at - timedelta(minutes=1))])
    assert store.get("AAPL") == newest
    later = _at(base, newest.data_timestamp, newest.predicted_at + timedelta(minutes=1))
    store.upsert([later])
    assert store.get("AAPL") == later
    assert store.get("ZZZ") is None


def test_changed_since_reads_only_what_was_written_after_oldest_first(store: PredictionStore) -> None:
    assert store.changed_since(None) == [] and store.symbols() == [] and store.all() == []
    predictions = [_at(make_prediction(symbol, DAY0, 10.0 + i), DAY0, DAY0 + timedelta(seconds=10 - i))
                   for i, symbol in enumerate(["MSFT", "AAPL", "IBM"])]
    assert store.upsert(predictions) == 3
    rows = store.changed_since(None)
    assert [symbol for symbol, _, _ in rows] == ["IBM", "AAPL", "MSFT"]  # by predicted_at
    assert [Prediction.model_validate_json(payload) for _, _, payload in rows] == predictions[::-1]
    assert [at for _, at, _ in rows] == [p.predicted_at.isoformat() for p in predictions[::-1]]
    # After a row's predicted_at: the rows predicted later only, strictly.
    assert [s for s, _, _ in store.changed_since(rows[1][1])] == ["MSFT"]
    assert store.changed_since(rows[2][1]) == []
    moved = _at(predictions[1], DAY0 + timedelta(days=1), DAY0 + timedelta(days=1))
    store.upsert([moved])
    assert [s for s, _, _ in store.changed_since(rows[2][1])] == ["AAPL"]
    assert store.symbols() == ["AAPL", "IBM", "MSFT"]
    assert [p.symbol for p in store.all()] == ["AAPL", "IBM", "MSFT"]
    assert store.all()[0] == moved


def test_concurrent_writers_leave_the_newest_per_symbol(store: PredictionStore) -> None:
    """Writers racing with old and new rows of the same symbols (the scorer catching up while a
    restarted one writes): whatever the interleaving, the newest row is what stays."""
    base = make_prediction("X", DAY0, 10.0)
    symbols = [f"S{i:03d}" for i in range(50)]

    def rows(step: int) -> list[tuple[str, str, str, str]]:
        out = []
        for symbol in symbols:
            p = _at(base.model_copy(update={"symbol": symbol}), DAY0 + timedelta(minutes=step),
                    DAY0 + timedelta(minutes=step, seconds=1))
            out.append((symbol, p.data_timestamp.isoformat(), p.predicted_at.isoformat(), p.model_dump_json()))
        return out

    steps = list(range(20))
    threads = [threading.Thread(target=lambda order=order: [store.upsert_rows(rows(s)) for s in order])
               for order in (steps, steps[::-1], steps[::2] + steps[1::2])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {p.data_timestamp for p in store.all()} == {DAY0 + timedelta(minutes=19)}
    assert len(store.changed_since(None)) == len(symbols)


def test_a_redis_that_does_not_answer_is_unavailable_within_the_timeout(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path, password="pw").start()
    try:
        store = RedisOnlineStore(server.url(0), timeout=0.3)
        store.upsert([make_prediction("AAPL", DAY0, 100.0)])
        server.pause()  # accepts connections and never answers
        for read in (lambda: store.get("AAPL"), store.symbols, lambda: store.changed_since(None)):
            with pytest.raises(PredictionStoreUnavailable, match=r"cannot be read \(TimeoutError"):
                read()
        with pytest.raises(PredictionStoreUnavailable, match="cannot be written"):
            store.upsert([make_prediction("AAPL", DAY0 + timedelta(days=1), 101.0)])
        server.resume()
        assert store.get("AAPL") == make_prediction("AAPL", DAY0, 100.0)
        # Killed and started again on the same port (empty, no snapshot): the pooled
        # connection is replaced without a failed call.
        server.kill()
        server.start()
        assert store.get("AAPL") is None
        # The password never shows in what the store says about itself.
        assert "pw@" not in store.where and store.where == f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def test_the_factory_follows_the_setting(settings: Settings, redis_process: RedisProcess) -> None:
    assert isinstance(open_online_store(settings), OnlineStore)
    redis_settings = settings.model_copy(update={"predictions_store": "redis",
                                                 "predictions_redis_url": SecretStr(redis_process.url(4))})
    opened = open_online_store(redis_settings)
    assert isinstance(opened, RedisOnlineStore) and opened.timeout == settings.predictions_redis_timeout_seconds
    assert open_online_store(redis_settings, timeout=0.5).timeout == 0.5  # type: ignore[attr-defined]
    # The embedded Redis: its URL (and password file) read at the first call, not when built.
    embedded = open_online_store(settings.model_copy(update={"predictions_store": "redis", "redis_embedded": True}))
    with pytest.raises(PredictionStoreUnavailable, match="cannot be read"):
        embedded.symbols()
