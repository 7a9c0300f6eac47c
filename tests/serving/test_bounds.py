"""Bounds on what a client may hold, in process (serving/bounds.py, serving/security.py,
serving/routes/ws.py): body size, unauthenticated throttling, expensive routes, WebSocket
authentication and limits, out-of-range times. The connection-level bounds (idle sockets,
trickled headers and bodies) and the logs need a real server: test_server_bounds.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from serving.app import create_app
from serving.deps import get_store
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.core.settings import Settings


@contextmanager
def serving(settings: Settings, **update) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    settings = settings.model_copy(update={"scorer_publish_kafka": False, **update})
    store = ApiKeyStore(settings.api_keys_path)
    keys = {name: store.create(name, ["read", "score"], rate_limit="100000/second")[1] for name in ("a", "b")}
    with TestClient(create_app(settings)) as client:
        yield client, keys, settings


# --- body ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/score", "/api/v1/alerts/rules", "/api/v1/symbols", "/nowhere"])
def test_a_2_mb_body_is_413_before_it_is_read(settings: Settings, path: str) -> None:
    with serving(settings) as (client, keys, _):
        response = client.post(path, content=b"{" + b" " * 2_000_000 + b"}",
                               headers={"X-API-Key": keys["a"], "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body too large: at most 1,048,576 bytes (1 MiB)")
    assert response.headers["connection"] == "close"


def test_a_chunked_body_is_counted_as_it_arrives(settings: Settings) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            sent.append(1)
            yield b" " * 65_536

    with serving(settings, api_max_body_bytes=100_000) as (client, keys, _):
        response = client.post("/api/v1/score", content=chunks(), headers={"X-API-Key": keys["a"]})
        assert response.status_code == 413
        assert "received more than 100,000 bytes" in response.json()["detail"]
        # A body under the bound reaches the route as before.
        small = client.post("/api/v1/score", json={"symbols": ["NOPE"]}, headers={"X-API-Key": keys["a"]})
        assert small.status_code != 413


# --- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize("param, value", [("start", "0001-01-01T00:00:00+14:00"),
                                          ("end", "9999-12-31T23:59:59-14:00")])
def test_a_time_out_of_range_in_utc_is_422(settings: Settings, param: str, value: str) -> None:
    with serving(settings) as (client, keys, _):
        response = client.get("/api/v1/predictions/AAPL/history", params={param: value},
                              headers={"X-API-Key": keys["a"]})
    assert response.status_code == 422
    assert response.json()["detail"] == (f"query.{param}: Value error, out of range: in UTC the time must fall "
                                         "between 0001-01-01 and 9999-12-31")


# --- keys ------------------------------------------------------------------------------------


def test_requests_without_a_valid_key_are_throttled_per_address(settings: Settings) -> None:
    with serving(settings, api_unauthenticated_rate_limit="3/minute") as (client, keys, _):
        made_up = {"X-API-Key": "tck_0123456789ab_" + "x" * 30}
        statuses = [client.get("/api/v1/symbols", headers=made_up).status_code for _ in range(3)]
        statuses += [client.get("/api/v1/predictions/AAPL").status_code]  # no key: the same budget
        assert statuses == [401, 401, 401, 429]
        limited = client.get("/api/v1/symbols", headers=made_up)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "without a valid API key from this address" in limited.json()["detail"]
        # A valid key is not charged to the address.
        assert client.get("/api/v1/symbols", headers={"X-API-Key": keys["a"]}).status_code == 200


def test_expensive_routes_have_their_own_budget(settings: Settings) -> None:
    with serving(settings, api_expensive_rate_limit="2/minute") as (client, keys, _):
        key = {"X-API-Key": keys["a"]}
        history = [client.get("/api/v1/predictions/AAPL/history", headers=key).status_code for _ in range(3)]
        assert history[:2] == [404, 404] and history[2] == 429
        assert client.get("/api/v1/bars/AAPL", headers=key).status_code == 429
        # The cheap reads keep their budget, and another key its own.
        assert client.get("/api/v1/symbols", headers=key).status_code == 200
        assert client.get("/api/v1/bars/AAPL", headers={"X-API-Key": keys["b"]}).status_code == 404


def test_expensive_requests_beyond_the_concurrency_get_503_at_once(settings: Settings) -> None:
    entered, release = threading.Event(), threading.Event()

    class SlowStore:
        def require_known(self, symbol: str) -> None:
            entered.set()
            release.wait(timeout=60)

    with serving(settings, api_expensive_concurrency=1) as (client, keys, _):
        client.app.dependency_overrides[get_store] = lambda: SlowStore()
        key = {"X-API-Key": keys["a"]}
        first: list[int] = []
        worker = threading.Thread(target=lambda: first.append(
            client.get("/api/v1/predictions/AAPL/history", headers=key).status_code))
        worker.start()
        try:
            assert entered.wait(timeout=60)
            refused = client.get("/api/v1/predictions/AAPL/history", headers={"X-API-Key": keys["b"]})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert "already running 1 expensive requests" in refused.json()["detail"]
            # The hot path does not wait for a slot.
            assert client.get("/api/v1/predictions", params={"symbols": "AAPL"}, headers=key).status_code == 200
        finally:
            release.set()
            worker.join(timeout=60)
        assert first == [200]
        # The slot is free again.
        assert client.get("/api/v1/predictions/AAPL/history", headers=key).status_code == 200


# --- WebSocket -------------------------------------------------------------------------------


def _closed_with(ws) -> int:
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value.code


def test_websocket_authenticates_by_first_message_header_subprotocol_or_query(settings: Settings) -> None:
    with serving(settings) as (client, keys, _):
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "auth", "api_key": keys["a"]})
            assert ws.receive_json() == {"type": "authenticated"}
            ws.send_json({"action": "subscribe", "symbols": ["AAPL"]})
            assert ws.receive_json() == {"type": "subscribed", "symbols": ["AAPL"], "count": 1}
        with client.websocket_connect("/ws/predictions", subprotocols=["tickcast", "apikey." + keys["a"]]) as ws:
            assert ws.accepted_subprotocol == "tickcast"  # never the key
            ws.send_json({"action": "subscribe", "symbols": ["AAPL"]})
            assert ws.receive_json()["type"] == "subscribed"
        for kwargs in ({"headers": {"X-API-Key": keys["a"]}}, {}):
            path = "/ws/predictions" if kwargs else f"/ws/predictions?api_key={keys['a']}"
            with client.websocket_connect(path, **kwargs) as ws:
                ws.send_json({"action": "subscribe", "symbols": ["MSFT"]})
                assert ws.receive_json()["type"] == "subscribed"
        # A first message that is not an auth message: 401, and how to authenticate.
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "subscribe", "symbols": ["AAPL"]})
            error = ws.receive_json()
            assert error["type"] == "error" and error["status"] == 401
            assert '{"action": "auth", "api_key": "..."}' in error["detail"]
            assert _closed_with(ws) == 4401


def test_websocket_replies_with_what_changed_and_the_count(settings: Settings) -> None:
    with serving(settings) as (client, keys, _):
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}) as ws:
            ws.send_json({"action": "subscribe", "symbols": ["A", "B", "C"]})
            assert ws.receive_json() == {"type": "subscribed", "symbols": ["A", "B", "C"], "count": 3}
            ws.send_json({"action": "subscribe", "symbols": ["C", "D"]})
            assert ws.receive_json() == {"type": "subscribed", "symbols": ["D"], "count": 4}
            ws.send_json({"action": "unsubscribe", "symbols": ["A", "Z"]})
            assert ws.receive_json() == {"type": "unsubscribed", "symbols": ["A"], "count": 3}


def test_websocket_limits_symbols_per_connection(settings: Settings) -> None:
    with serving(settings, api_ws_max_symbols=3) as (client, keys, _):
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}) as ws:
            ws.send_json({"action": "subscribe", "symbols": [f"S{i}" for i in range(50_000)]})
            error = ws.receive_json()
            assert error == {"type": "error", "status": 422,
                             "detail": "at most 3 symbols per connection; this command names 50,000"}
            ws.send_json({"action": "subscribe", "symbols": ["A", "B"]})
            assert ws.receive_json()["count"] == 2
            ws.send_json({"action": "subscribe", "symbols": ["C", "D"]})
            error = ws.receive_json()
            assert error["status"] == 422 and "follows 2, this would make 4" in error["detail"]
            ws.send_json({"action": "subscribe", "symbols": ["C"]})  # still open, still usable
            assert ws.receive_json() == {"type": "subscribed", "symbols": ["C"], "count": 3}


def test_websocket_limits_commands_per_second_with_close_1008(settings: Settings) -> None:
    with serving(settings, api_ws_command_rate_limit="3/minute") as (client, keys, _):
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}) as ws:
            for _ in range(3):
                ws.send_json({"action": "subscribe", "symbols": ["A"]})
                assert ws.receive_json()["type"] == "subscribed"
            ws.send_json({"action": "subscribe", "symbols": ["A"]})
            error = ws.receive_json()
            assert error["status"] == 429 and "more than 3 per 1 minute commands" in error["detail"]
            assert _closed_with(ws) == 1008
        # Then the key opens no new connection for a while: refused at the handshake.
        with pytest.raises(WebSocketDenialResponse) as refused:
            client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}).__enter__()
        assert refused.value.status_code == 429 and int(refused.value.headers["Retry-After"]) >= 1
        assert "closed for sending too many commands" in refused.value.json()["detail"]
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["b"]}) as other:
            other.send_json({"action": "subscribe", "symbols": ["A"]})
            assert other.receive_json()["type"] == "subscribed"


def test_websocket_limits_connections_per_key(settings: Settings) -> None:
    with serving(settings, api_ws_max_connections_per_key=2) as (client, keys, _):
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}), \
                client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}):
            with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}) as third:
                error = third.receive_json()
                assert error["status"] == 429 and "already has 2 open connections" in error["detail"]
                assert _closed_with(third) == 1008
            # Another key is not affected.
            with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["b"]}) as other:
                other.send_json({"action": "subscribe", "symbols": ["A"]})
                assert other.receive_json()["type"] == "subscribed"
        # Closed connections free their places.
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}) as again:
            again.send_json({"action": "subscribe", "symbols": ["A"]})
            assert again.receive_json()["type"] == "subscribed"


def test_a_revoked_keys_open_websockets_are_closed(settings: Settings) -> None:
    with serving(settings, api_key_cache_seconds=0.5) as (client, keys, settings):
        with client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["a"]}) as ws, \
                client.websocket_connect("/ws/predictions", headers={"X-API-Key": keys["b"]}) as kept:
            ws.send_json({"action": "subscribe", "symbols": ["A"]})
            assert ws.receive_json()["type"] == "subscribed"
            ApiKeyStore(settings.api_keys_path).revoke("a")
            # Nothing else is sent on it: the next message is the revocation (pytest-timeout bounds the wait).
            assert ws.receive_json() == {"type": "error", "status": 401, "detail": "this API key was revoked"}
            assert _closed_with(ws) == 4401
            kept.send_json({"action": "subscribe", "symbols": ["A"]})
            assert kept.receive_json()["type"] == "subscribed"
