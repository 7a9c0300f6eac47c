"""The live predictions service without a web framework: subscribers of some symbols or of every
symbol read new predictions from a queue, and each held prediction knows whether it is stale.

Where the predictions come from (Kafka, the online store) is in tests/serving/test_live_feed.py.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from tests.serving.market_data import make_prediction
from tickcast.core.predictions import Prediction, is_stale
from tickcast.scoring.live_predictions import CLIENT_QUEUE, LivePredictions, Subscriber, _entry

T0 = datetime(2026, 3, 6, 21, 0, tzinfo=UTC)


def _payload(symbol: str, data_timestamp: datetime = T0, price: float = 100.0, horizon: str = "1d") -> str:
    return _prediction(symbol, data_timestamp, price, horizon).model_dump_json()


def _prediction(symbol: str, data_timestamp: datetime = T0, price: float = 100.0, horizon: str = "1d") -> Prediction:
    return make_prediction(symbol, data_timestamp, price).model_copy(update={
        "predicted_at": data_timestamp + timedelta(seconds=1), "horizon": horizon})


def _live() -> LivePredictions:
    return LivePredictions(store=None, poll_seconds=1.0)  # type: ignore[arg-type]  # no store read here


def _pending(subscriber: Subscriber) -> list[tuple[str, float]]:
    out = []
    while not subscriber.queue.empty():
        entry = subscriber.queue.get_nowait()
        out.append((entry.symbol, entry.data_timestamp))
    return out


def test_a_subscriber_of_every_symbol_gets_each_new_prediction_once() -> None:
    live = _live()
    everything, some = Subscriber(), Subscriber()
    for subscriber in (everything, some):
        live.join(subscriber)
    live.subscribe_all(everything)
    live.subscribe(everything, ["AAA"])  # also subscribed to one: still once
    live.subscribe(some, ["AAA"])
    assert everything.every_symbol and not some.every_symbol

    live.ingest([_payload("AAA"), _payload("BBB"), _payload("AAA")])  # the copy is not new
    assert _pending(everything) == [("AAA", T0.timestamp()), ("BBB", T0.timestamp())]
    assert _pending(some) == [("AAA", T0.timestamp())]

    later = T0 + timedelta(minutes=1)
    live.ingest([_payload("CCC", later, 5.0)])
    assert _pending(everything) == [("CCC", later.timestamp())]
    assert _pending(some) == []

    live.unsubscribe_all(everything)
    live.ingest([_payload("DDD"), _payload("AAA", later, 2.0)])
    assert _pending(everything) == [("AAA", later.timestamp())]  # its own symbols only
    assert _pending(some) == [("AAA", later.timestamp())]
    live.leave(everything)
    live.leave(some)
    live.ingest([_payload("AAA", later + timedelta(minutes=1), 3.0)])
    assert _pending(everything) == _pending(some) == []
    assert live.everyone == set() and live.subscribers == {} and live.clients == set()


def test_a_consumer_reads_updates_on_the_event_loop() -> None:
    """How a consumer that is not a WebSocket (the dashboard) follows every symbol."""

    async def follow() -> tuple[list[str], list[str]]:
        live = _live()
        live.ingest([_payload("OLD")])
        subscriber = Subscriber()
        live.join(subscriber)
        live.subscribe_all(subscriber)
        snapshot = sorted(live.latest)  # what is held already: read right after subscribing

        async def scorer() -> None:
            await asyncio.sleep(0)
            await live.ingest_chunked([_payload(f"S{i}") for i in range(3)])

        task = asyncio.create_task(scorer())
        received = [(await asyncio.wait_for(subscriber.queue.get(), 5)).symbol for _ in range(3)]
        await task
        live.leave(subscriber)
        return snapshot, received

    assert asyncio.run(follow()) == (["OLD"], ["S0", "S1", "S2"])


def test_a_subscriber_that_falls_behind_loses_its_oldest_updates() -> None:
    live = _live()
    subscriber = Subscriber(queue=asyncio.Queue(2))
    live.subscribe_all(subscriber)
    live.ingest([_payload(f"S{i}") for i in range(5)])
    assert [symbol for symbol, _ in _pending(subscriber)] == ["S3", "S4"]
    assert subscriber.dropped == 3
    assert Subscriber().queue.maxsize == CLIENT_QUEUE


@pytest.mark.parametrize(("horizon", "limit"), [("1d", timedelta(days=4)), ("5d", timedelta(days=4)),
                                                 ("30m", timedelta(minutes=15)), ("1h", timedelta(minutes=15))])
def test_an_entry_is_stale_when_the_rule_says_so(horizon: str, limit: timedelta) -> None:
    entry = _entry(_payload("AAA", T0, horizon=horizon))
    assert entry.stale_after == limit.total_seconds()
    for age in (timedelta(0), limit - timedelta(milliseconds=1), limit, limit + timedelta(milliseconds=1),
                timedelta(days=4.8 * 365)):
        now = T0 + age
        assert entry.is_stale(now.timestamp()) == is_stale(T0, horizon, now), age


def test_a_prediction_whose_horizon_names_no_interval_is_skipped(caplog) -> None:
    live = _live()
    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.live_predictions"):
        assert live.ingest([_payload("ODD", horizon="1w"), _payload("AAA")]) == 1
    assert set(live.latest) == {"AAA"}
    assert "not the contract's JSON was skipped" in caplog.text and "1w" in caplog.text
