"""Where the API's latest predictions come from: the Kafka ``predictions`` topic (pushed, not
polled), with the online store polled only as a fallback; a WebSocket subscriber gets a
prediction only when it changed, and an older one never replaces a newer one.

A real broker (the session's); each test has a topic and a home of its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.market_data import make_prediction
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog.online import OnlineStore
from tickcast.core.predictions import Prediction
from tickcast.core.settings import Settings
from tickcast.platform.processes import free_port
from tickcast.scoring.live_predictions import LivePredictions, _entry
from tickcast.scoring.publish import PredictionPublisher

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _prediction(symbol: str, data_timestamp: datetime, price: float = 100.0, *,
                predicted_at: datetime | None = None, model_version: str = "1") -> Prediction:
    return make_prediction(symbol, data_timestamp, price).model_copy(update={
        "predicted_at": predicted_at or data_timestamp + timedelta(seconds=1), "model_version": model_version})


def _rows(*predictions: Prediction) -> list[tuple[str, str, str, str]]:
    """What the scorer publishes: (symbol, data_timestamp, predicted_at, contract JSON)."""
    return [(p.symbol, p.data_timestamp.isoformat(), p.predicted_at.isoformat(), p.model_dump_json())
            for p in predictions]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def on_kafka(settings: Settings, kafka_bootstrap: str) -> Settings:
    """``settings`` with a fresh `predictions` topic of two partitions on the session broker."""
    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        future.result(30)
    return settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap, "topic_predictions": topic,
                                       "api_key_cache_seconds": 0.0})


def _key(settings: Settings) -> dict[str, str]:
    return {"X-API-Key": ApiKeyStore(settings.api_keys_path).create("live", ["read"],
                                                                     rate_limit="100000/second")[1]}


@pytest.fixture
def publisher(on_kafka: Settings) -> Iterator[PredictionPublisher]:
    yield PredictionPublisher(on_kafka)


def _started(client: TestClient, source: str) -> LivePredictions:
    live: LivePredictions = client.app.state.live  # type: ignore[attr-defined]
    _wait(lambda: live.source == source, f"the API to take its predictions from {source}")
    return live


def _served(client: TestClient, symbol: str, data_timestamp: datetime) -> Callable[[], bool]:
    def check() -> bool:
        response = client.get(f"/api/v1/predictions/{symbol}")
        return response.status_code == 200 and \
            datetime.fromisoformat(response.json()["data_timestamp"]) == data_timestamp
    return check


def test_a_prediction_on_the_topic_is_served_and_pushed(on_kafka: Settings, publisher, caplog) -> None:
    headers = _key(on_kafka)
    with caplog.at_level(logging.INFO, logger="tickcast.scoring"), \
            TestClient(create_app(on_kafka), headers=headers) as client:
        _started(client, "kafka")
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "subscribe", "symbols": ["KAF"]})
            assert ws.receive_json() == {"type": "subscribed", "symbols": ["KAF"], "count": 1}
            publisher.publish_rows(_rows(_prediction("KAF", T0, 123.0)))
            _wait(_served(client, "KAF", T0), "GET to serve the published prediction")
            update = ws.receive_json()
            assert update["type"] == "prediction_update"
            assert update["prediction"]["symbol"] == "KAF"
            assert datetime.fromisoformat(update["prediction"]["data_timestamp"]) == T0
    # It came by Kafka: nothing was ever written to the online store.
    assert OnlineStore(on_kafka.online_store_path).get("KAF") is None
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"from Kafka topic '{on_kafka.topic_predictions}'" in messages
    assert "following Kafka topic" in messages


def test_the_same_prediction_published_twice_is_pushed_once(on_kafka: Settings, publisher) -> None:
    first = _prediction("DUP", T0, 50.0)
    # Made again later from the same data with the same result: newer, but the same prediction.
    remade = first.model_copy(update={"predicted_at": first.predicted_at + timedelta(seconds=5)})
    changed = _prediction("DUP", T0 + timedelta(seconds=1), 51.0)
    with TestClient(create_app(on_kafka), headers=_key(on_kafka)) as client:
        live = _started(client, "kafka")
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "subscribe", "symbols": ["DUP"]})
            ws.receive_json()
            publisher.publish_rows(_rows(first))
            publisher.publish_rows(_rows(first))
            publisher.publish_rows(_rows(remade))
            _wait(lambda: live.counts["seen"] >= 3, "the three copies to be consumed")
            # GET shows the newest copy, which was not pushed.
            assert datetime.fromisoformat(
                client.get("/api/v1/predictions/DUP").json()["predicted_at"]) == remade.predicted_at
            publisher.publish_rows(_rows(changed))
            _wait(_served(client, "DUP", changed.data_timestamp), "the changed prediction")
            pushed = [ws.receive_json()["prediction"] for _ in range(2)]
    assert [datetime.fromisoformat(p["data_timestamp"]) for p in pushed] == [T0, changed.data_timestamp]
    assert datetime.fromisoformat(pushed[0]["predicted_at"]) == first.predicted_at
    assert live.counts == {"seen": 4, "kept": 3, "pushed": 2}


def test_an_older_prediction_does_not_replace_a_newer_one(on_kafka: Settings, publisher) -> None:
    newer = _prediction("ORD", T0 + timedelta(minutes=1), 20.0)
    older = _prediction("ORD", T0, 10.0)
    # Same data, made earlier: older too, by predicted_at.
    made_before = newer.model_copy(update={"predicted_at": newer.predicted_at - timedelta(seconds=30),
                                           "predicted_price": 1.0})
    # An older one in the store (as the catch-up and the resync read it) loses as well.
    OnlineStore(on_kafka.online_store_path).upsert([_prediction("ORD", T0 - timedelta(days=1), 5.0)])
    with TestClient(create_app(on_kafka), headers=_key(on_kafka)) as client:
        live = _started(client, "kafka")
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "subscribe", "symbols": ["ORD", "END"]})
            ws.receive_json()
            assert datetime.fromisoformat(ws.receive_json()["prediction"]["data_timestamp"]) == \
                T0 - timedelta(days=1)  # the store's, at once
            publisher.publish_rows(_rows(newer))
            _wait(_served(client, "ORD", newer.data_timestamp), "the newer prediction")
            publisher.publish_rows(_rows(older, made_before))
            publisher.publish_rows(_rows(_prediction("END", T0)))  # the same partition or not: waited for below
            _wait(lambda: live.counts["seen"] >= 5, "every prediction to be consumed")
            client.portal.call(live.refresh)  # a resync of the store (its older row) changes nothing either
            body = client.get("/api/v1/predictions/ORD").json()
            assert datetime.fromisoformat(body["data_timestamp"]) == newer.data_timestamp
            assert body["predicted_price"] == newer.predicted_price
            assert ws.receive_json()["prediction"]["symbol"] == "ORD"  # the newer
            assert ws.receive_json()["prediction"]["symbol"] == "END"  # and no older one in between


def test_predictions_in_the_store_at_start_are_served_and_none_published_meanwhile_is_lost(
        on_kafka: Settings, publisher) -> None:
    store = OnlineStore(on_kafka.online_store_path)
    store.upsert([_prediction("OLD", T0)])
    # Published (and stored, as the scorer does) before the API starts: the API reads it from the store.
    before = _prediction("PRE", T0)
    store.upsert([before])
    publisher.publish_rows(_rows(before))
    with TestClient(create_app(on_kafka), headers=_key(on_kafka)) as client:
        assert client.get("/api/v1/predictions/OLD").status_code == 200  # at once, before Kafka
        live = _started(client, "kafka")
        assert set(live.latest) == {"OLD", "PRE"}
        after = _prediction("NEW", T0)
        publisher.publish_rows(_rows(after))
        _wait(_served(client, "NEW", T0), "a prediction published after the start")


def test_the_store_is_polled_when_publishing_to_kafka_is_off(on_kafka: Settings, publisher, caplog) -> None:
    settings = on_kafka.model_copy(update={"scorer_publish_kafka": False})
    store = OnlineStore(settings.online_store_path)
    with caplog.at_level(logging.INFO, logger="tickcast.scoring"), \
            TestClient(create_app(settings), headers=_key(settings)) as client:
        live: LivePredictions = client.app.state.live  # type: ignore[attr-defined]
        assert live.feed is None and live.source == "store"
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "subscribe", "symbols": ["POLL"]})
            ws.receive_json()
            publisher.publish_rows(_rows(_prediction("TOPIC", T0)))  # not followed: never served
            store.upsert([_prediction("POLL", T0)])
            _wait(_served(client, "POLL", T0), "the polled prediction")
            assert ws.receive_json()["prediction"]["symbol"] == "POLL"
            store.upsert([_prediction("POLL", T0)])  # the same again (a new row, same prediction)
            store.upsert([_prediction("POLL", T0 + timedelta(seconds=1), 7.0)])
            assert datetime.fromisoformat(ws.receive_json()["prediction"]["data_timestamp"]) == \
                T0 + timedelta(seconds=1)
        assert client.get("/api/v1/predictions/TOPIC").status_code == 404
    assert any("polling the online store every" in r.getMessage() and "TICKCAST_SCORER_PUBLISH_KAFKA" in
               r.getMessage() for r in caplog.records)


def test_the_store_is_polled_while_the_broker_is_unreachable(settings: Settings, caplog) -> None:
    nowhere = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    with caplog.at_level(logging.WARNING, logger="tickcast.scoring"), \
            TestClient(create_app(nowhere), headers=_key(nowhere)) as client:
        live: LivePredictions = client.app.state.live  # type: ignore[attr-defined]
        assert live.feed is not None
        OnlineStore(nowhere.online_store_path).upsert([_prediction("DOWN", T0)])
        _wait(_served(client, "DOWN", T0), "the polled prediction")
        assert live.source == "store"
        _wait(lambda: any("not available" in r.getMessage() for r in caplog.records), "the warning")
        feed = live.feed
    # The app's shutdown stopped the thread and closed its consumer.
    assert not feed.alive
    assert live.feed is None


def test_the_consumer_is_closed_on_shutdown(on_kafka: Settings) -> None:
    with TestClient(create_app(on_kafka)) as client:
        live = _started(client, "kafka")
        feed = live.feed
        assert feed is not None and feed.alive
    assert not feed.alive and not feed.healthy


def test_newer_wins_and_unchanged_is_not_pushed_whatever_the_order() -> None:
    live = LivePredictions(store=None, poll_seconds=1.0)  # type: ignore[arg-type]

    def entry(data_s: int, made_s: int, price: float = 1.0):
        p = _prediction("X", T0 + timedelta(seconds=data_s), price,
                        predicted_at=T0 + timedelta(seconds=made_s))
        return _entry(p.model_dump_json())

    assert [e.order for e in live.apply([entry(1, 2)])] == [entry(1, 2).order]
    assert live.apply([entry(1, 2)]) == []  # a copy
    assert live.apply([entry(0, 9), entry(1, 1, price=3.0)]) == []  # older data; same data made earlier
    assert live.apply([entry(1, 3)]) == []  # made again, unchanged: kept, not pushed
    assert live.latest["X"].order == entry(1, 3).order
    assert len(live.apply([entry(1, 4, price=2.0)])) == 1  # made again, different
    assert len(live.apply([entry(2, 2, price=2.0)])) == 1  # newer data, same values: a new prediction
    assert live.counts == {"seen": 7, "kept": 4, "pushed": 3}
