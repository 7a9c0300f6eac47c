"""The hot reads (serving.hot) answer exactly as the routes they stand in front of.

A request the hot path declines reaches the FastAPI route; an extra query parameter (which
the routes ignore) is how these tests reach the route for the same question.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.market_data import Scored


@pytest.fixture(scope="module")
def api(scored: Scored):
    with TestClient(create_app(scored.settings)) as client:
        yield client


def _without_freshness(body: dict) -> dict:
    body = dict(body)
    assert isinstance(body.pop("data_freshness_sec"), float)
    return body


def _metric(client: TestClient, handler: str, status: int) -> float:
    prefix = f'http_requests_total{{handler="{handler}",method="GET",status="{status}"}} '
    line = next((x for x in client.get("/metrics").text.splitlines() if x.startswith(prefix)), None)
    return 0.0 if line is None else float(line.removeprefix(prefix))


def test_one_prediction_is_the_routes_answer(api: TestClient, scored: Scored) -> None:
    headers = {"X-API-Key": scored.keys["reader"]}
    before = _metric(api, "/api/v1/predictions/{symbol}", 200)
    hot = api.get("/api/v1/predictions/AAPL", headers=headers)
    routed = api.get("/api/v1/predictions/AAPL", params={"via": "route"}, headers=headers)
    assert hot.status_code == routed.status_code == 200
    assert hot.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert int(hot.headers["content-length"]) == len(hot.content)
    assert _without_freshness(hot.json()) == _without_freshness(routed.json())
    # Both are counted under the route's template, whoever answered.
    assert _metric(api, "/api/v1/predictions/{symbol}", 200) == before + 2


def test_a_batch_is_the_routes_answer(api: TestClient, scored: Scored) -> None:
    headers = {"X-API-Key": scored.keys["reader"]}
    query = "AAPL, MSFT,AAPL,NOPE"
    hot = api.get("/api/v1/predictions", params={"symbols": query}, headers=headers).json()
    routed = api.get("/api/v1/predictions", params={"symbols": query, "via": "route"}, headers=headers).json()
    assert hot["count"] == routed["count"] == 2 and hot["missing"] == routed["missing"] == ["NOPE"]
    assert ([_without_freshness(p) for p in hot["predictions"]]
            == [_without_freshness(p) for p in routed["predictions"]])
    assert [p["symbol"] for p in hot["predictions"]] == ["AAPL", "MSFT"]


@pytest.mark.parametrize(("path", "key", "status", "detail"), [
    ("/api/v1/predictions/AAPL", None, 401, "missing API key"),
    ("/api/v1/predictions/AAPL", "tck_000000000000_notarealkeynotarealkey", 401, "invalid or revoked API key"),
    ("/api/v1/predictions/ZZZZ", "reader", 404, "unknown symbol 'ZZZZ'"),
    ("/api/v1/predictions/aapl", "reader", 404, "did you mean 'AAPL'?"),
    ("/api/v1/predictions?symbols=,,", "reader", 422, "give at least one symbol"),
    ("/api/v1/predictions?symbols=AAPL,bad/one", "reader", 422, "not valid ticker symbols"),
])
def test_what_the_hot_path_declines_gets_the_routes_error(api: TestClient, scored: Scored, path: str,
                                                         key: str | None, status: int, detail: str) -> None:
    headers = {} if key is None else {"X-API-Key": scored.keys.get(key, key)}
    response = api.get(path, headers=headers)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_the_hot_path_charges_the_keys_limit(scored: Scored) -> None:
    # A fresh app: the `tight` key's two requests a minute are its own here.
    with TestClient(create_app(scored.settings)) as client:
        headers = {"X-API-Key": scored.keys["tight"]}
        one = client.get("/api/v1/predictions/AAPL", headers=headers)
        many = client.get("/api/v1/predictions", params={"symbols": "AAPL,MSFT"}, headers=headers)
        limited = client.get("/api/v1/predictions/MSFT", headers=headers)
        assert [one.status_code, many.status_code, limited.status_code] == [200, 200, 429]
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "rate limit of 2 per 1 minute" in limited.json()["detail"]
        assert _metric(client, "/api/v1/predictions/{symbol}", 429) == 1
