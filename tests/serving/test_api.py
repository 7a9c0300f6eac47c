"""The API's contract, route by route, over real Delta tables and a real online store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.deps import get_store
from tests.serving.market_data import Market, make_prediction
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog.market import BAR_COLUMNS
from tickcast.catalog.online import OnlineStore
from tickcast.core.predictions import Prediction
from tickcast.core.settings import Settings


@pytest.fixture(scope="module")
def client(market: Market, api_keys: dict[str, str]):
    # Many expensive requests a second from one key: their own budget is tested in test_bounds.py.
    relaxed = market.settings.model_copy(update={"api_expensive_rate_limit": "100000/second"})
    with TestClient(create_app(relaxed), headers={"X-API-Key": api_keys["reader"]}) as test_client:
        yield test_client


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _bar_json(row: tuple) -> dict:
    bar = dict(zip(BAR_COLUMNS, row, strict=True))
    bar["window_start"] = _iso(bar["window_start"])
    bar["window_end"] = _iso(bar["window_end"])
    return bar


# --- predictions -------------------------------------------------------------------------


def test_prediction_has_every_contract_field(client: TestClient, market: Market) -> None:
    stored = market.predictions["AAPL"]
    before = datetime.now(UTC)
    response = client.get("/api/v1/predictions/AAPL")
    after = datetime.now(UTC)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(Prediction.model_fields) | {"data_freshness_sec", "stale"}
    freshness = body.pop("data_freshness_sec")
    assert body.pop("stale") is True  # daily data of 2024
    assert Prediction.model_validate(body) == stored
    assert body["probabilities"] == {"up": 0.55, "neutral": 0.25, "down": 0.2}
    assert body["signal"] == "BUY"
    assert (before - stored.data_timestamp).total_seconds() <= freshness
    assert freshness <= (after - stored.data_timestamp).total_seconds()


def test_a_prediction_is_stale_when_its_data_is_older_than_its_interval_allows(settings: Settings) -> None:
    now = datetime.now(UTC)
    ages = {  # symbol -> (horizon, age of its data, stale)
        "ANCIENT": ("1d", timedelta(days=4.8 * 365), True),  # the 4.8-year-old HOLD
        "MISSED": ("5d", timedelta(days=4, minutes=10), True),  # a trading day without a bar
        "WEEKEND": ("1d", timedelta(days=3, hours=17), False),  # Friday's close on Tuesday's open
        "QUIET": ("30m", timedelta(minutes=16), True),
        "LIVE": ("1h", timedelta(seconds=5), False),
    }
    OnlineStore(settings.online_store_path).upsert([
        make_prediction(symbol, now - age, 10.0).model_copy(update={"horizon": horizon, "predicted_at": now})
        for symbol, (horizon, age, _) in ages.items()])
    expected = {symbol: stale for symbol, (_, _, stale) in ages.items()}
    settings = settings.model_copy(update={"scorer_publish_kafka": False})
    _, key = ApiKeyStore(settings.api_keys_path).create("stale", ["read"], rate_limit="100000/second")
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        single = {symbol: client.get(f"/api/v1/predictions/{symbol}").json() for symbol in ages}
        assert {symbol: body["stale"] for symbol, body in single.items()} == expected
        assert all(isinstance(body["data_freshness_sec"], float) for body in single.values())
        batch = client.get("/api/v1/predictions", params={"symbols": ",".join(ages)}).json()
        assert {p["symbol"]: p["stale"] for p in batch["predictions"]} == expected
        # The route (behind the hot path) says the same: a query parameter the hot path leaves to it.
        routed = client.get("/api/v1/predictions/ANCIENT", params={"include_features": "false"}).json()
        assert routed["stale"] is True
        # And so do the WebSocket's updates, with the freshness as of their sending.
        with client.websocket_connect("/ws/predictions") as ws:
            ws.send_json({"action": "subscribe", "symbols": ["ANCIENT", "LIVE"]})
            assert ws.receive_json()["type"] == "subscribed"
            pushed = [ws.receive_json()["prediction"] for _ in range(2)]
        assert {p["symbol"]: p["stale"] for p in pushed} == {"ANCIENT": True, "LIVE": False}
        assert all(p["data_freshness_sec"] > 0 for p in pushed)


def test_prediction_of_unknown_symbol_is_404_with_message(client: TestClient) -> None:
    response = client.get("/api/v1/predictions/XYZ")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown symbol 'XYZ'")


def test_prediction_hints_at_case(client: TestClient) -> None:
    response = client.get("/api/v1/predictions/aapl")
    assert response.status_code == 404
    assert "did you mean 'AAPL'" in response.json()["detail"]


def test_symbol_with_bars_but_no_prediction_is_404_saying_so(client: TestClient) -> None:
    response = client.get("/api/v1/predictions/NOPRED")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no prediction yet for 'NOPRED'")


@pytest.mark.parametrize("symbol", ["BAD$SYM", "A" * 33, "AAPL%20OR%201=1", "<script>"])
def test_malformed_symbol_is_422(client: TestClient, symbol: str) -> None:
    for path in (f"/api/v1/predictions/{symbol}", f"/api/v1/bars/{symbol}"):
        response = client.get(path)
        assert response.status_code == 422, path
        body = response.json()
        assert body["detail"].startswith("path.symbol: String should match pattern")
        assert body["errors"][0]["loc"] == ["path", "symbol"]


# --- symbols -----------------------------------------------------------------------------


def test_symbols_lists_bars_and_predictions(client: TestClient) -> None:
    response = client.get("/api/v1/symbols")
    assert response.status_code == 200
    assert response.json() == {
        "count": 4,
        "symbols": [
            {"symbol": "AAPL", "has_prediction": True},
            {"symbol": "MSFT", "has_prediction": True},
            {"symbol": "NOPRED", "has_prediction": False},
            {"symbol": "PREDONLY", "has_prediction": True},
        ],
    }


# --- bars --------------------------------------------------------------------------------


def test_bars_default_is_daily_ascending(client: TestClient, market: Market) -> None:
    response = client.get("/api/v1/bars/MSFT")
    assert response.status_code == 200
    body = response.json()
    assert (body["symbol"], body["interval"], body["count"]) == ("MSFT", "1d", 30)
    assert body["bars"] == [_bar_json(r) for r in market.bars_1d["MSFT"]]


def test_bars_limit_keeps_the_latest_in_ascending_order(client: TestClient, market: Market) -> None:
    body = client.get("/api/v1/bars/AAPL", params={"interval": "1d", "limit": 7}).json()
    assert body["count"] == 7
    assert body["bars"] == [_bar_json(r) for r in market.bars_1d["AAPL"][-7:]]
    starts = [b["window_start"] for b in body["bars"]]
    assert starts == sorted(starts)


def test_minute_bars(client: TestClient, market: Market) -> None:
    body = client.get("/api/v1/bars/AAPL", params={"interval": "1m", "limit": 5000}).json()
    assert body["interval"] == "1m"
    assert body["bars"] == [_bar_json(r) for r in market.bars_1m["AAPL"]]


def test_known_symbol_without_bars_of_that_interval_is_empty(client: TestClient) -> None:
    body = client.get("/api/v1/bars/MSFT", params={"interval": "1m"}).json()
    assert (body["count"], body["bars"]) == (0, [])
    body = client.get("/api/v1/bars/PREDONLY").json()
    assert (body["count"], body["bars"]) == (0, [])


def test_bars_of_unknown_symbol_is_404(client: TestClient) -> None:
    response = client.get("/api/v1/bars/XYZ")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown symbol 'XYZ'")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"interval": "5m"}, "query.interval: Input should be '1d' or '1m'"),
        ({"interval": ""}, "query.interval: Input should be '1d' or '1m'"),
        ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": 5001}, "query.limit: Input should be less than or equal to 5000"),
        ({"limit": "many"}, "query.limit: Input should be a valid integer"),
    ],
)
def test_bad_bars_query_is_422_with_message(client: TestClient, params: dict, message: str) -> None:
    response = client.get("/api/v1/bars/AAPL", params=params)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(message)


# --- operations --------------------------------------------------------------------------


def test_healthz_with_data(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"online_store", "delta_dir", "bars_1d", "bars_1m"}
    assert {c["status"] for c in body["components"].values()} == {"ok"}
    assert body["components"]["online_store"]["detail"] == "3 symbols with a prediction"


def test_healthz_on_an_empty_home_is_200_and_says_empty(settings: Settings) -> None:
    _, key = ApiKeyStore(settings.api_keys_path).create("empty", ["read"])
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        response = client.get("/healthz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "empty"
        assert body["components"]["online_store"]["detail"] == "no predictions written yet"
        assert body["components"]["bars_1d"]["detail"] == "table not created yet"
        assert body["components"]["delta_dir"]["status"] == "empty"
        # And an empty platform answers 404s and empty lists, not errors.
        assert client.get("/api/v1/symbols").json() == {"count": 0, "symbols": []}
        assert client.get("/api/v1/predictions/AAPL").status_code == 404
        assert client.get("/api/v1/bars/AAPL").status_code == 404


def test_healthz_is_503_when_the_online_store_is_unreadable(settings: Settings) -> None:
    settings.online_store_path.parent.mkdir(parents=True)
    settings.online_store_path.write_bytes(b"this is not a sqlite database" * 100)
    with TestClient(create_app(settings)) as client:  # starting up does not fail on it either
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["components"]["online_store"]["status"] == "error"
    assert body["components"]["online_store"]["detail"].startswith("unreadable:")


def test_metrics_count_requests(market: Market, api_keys: dict[str, str]) -> None:
    with TestClient(create_app(market.settings), headers={"X-API-Key": api_keys["reader"]}) as client:
        client.get("/api/v1/symbols")
        client.get("/api/v1/predictions/AAPL")
        client.get("/api/v1/bars/XYZ")
        text = client.get("/metrics").text
        assert 'http_requests_total{handler="/api/v1/symbols",method="GET",status="200"} 1.0' in text
        assert 'http_requests_total{handler="/api/v1/bars/{symbol}",method="GET",status="404"} 1.0' in text
        assert "http_request_duration_seconds_bucket" in text
        assert "tickcast_prediction_data_freshness_seconds_count 1.0" in text


def test_unexpected_error_is_json_500_without_traceback(market: Market, api_keys: dict[str, str], caplog) -> None:
    class BrokenStore:
        def symbols(self):
            raise sqlite3.OperationalError("disk I/O error")

    app = create_app(market.settings)
    app.dependency_overrides[get_store] = lambda: BrokenStore()
    client = TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": api_keys["reader"]})
    with caplog.at_level("ERROR", logger="tickcast.serving"):
        response = client.get("/api/v1/symbols")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert detail.startswith("internal error (id ")
    assert "Traceback" not in response.text and "disk I/O" not in response.text
    assert any("unhandled error" in r.getMessage() and r.exc_info for r in caplog.records)


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/predictions/{symbol}", "/api/v1/symbols", "/api/v1/bars/{symbol}", "/healthz"} <= set(
        spec["paths"]
    )
    bars = spec["paths"]["/api/v1/bars/{symbol}"]["get"]
    assert bars["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("BarsResponse")
    assert bars["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ValidationErrorResponse"
    )
    assert client.get("/docs").status_code == 200
