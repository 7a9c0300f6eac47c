"""API v1 with real models: scoring, history, explanations, models, keys and limits,
WebSocket; over the `scored` platform state of conftest.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.market_data import FEATURES, FIRST, Scored, make_prediction, scored_features
from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore

MODEL_NAME = "tickcast-lstm-1d+tickcast-transformer-1d"


@pytest.fixture(scope="module")
def api(scored: Scored):
    # Many expensive requests a second from one key: their own budget is tested in test_bounds.py.
    with TestClient(create_app(scored.settings.model_copy(update={"api_expensive_rate_limit": "100000/second"}))) \
            as client:
        yield client


def _as(scored: Scored, name: str) -> dict[str, str]:
    return {"X-API-Key": scored.keys[name]}


def _expected(scored: Scored, symbol: str, version: str = "1") -> tuple[np.ndarray, float]:
    """The ensemble's probabilities (down, neutral, up) and p50, computed here from the bundles."""
    pairs = [b.predict([symbol], scored.sequences[symbol][None]) for b in scored.bundles[version].values()]
    return (pairs[0][0][0] + pairs[1][0][0]) / 2, float((pairs[0][1][0, 1] + pairs[1][1][0, 1]) / 2)


# --- keys and limits -----------------------------------------------------------------------


def test_routes_need_a_key_except_health_metrics_and_docs(api: TestClient, scored: Scored) -> None:
    for path in ("/api/v1/predictions/AAPL", "/api/v1/predictions?symbols=AAPL", "/api/v1/models",
                 "/api/v1/predictions/AAPL/history", "/api/v1/explanations/AAPL", "/api/v1/symbols"):
        response = api.get(path)
        assert response.status_code == 401, path
        assert "X-API-Key" in response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "ApiKey"
    assert api.post("/api/v1/score", json={"symbols": ["AAPL"]}).status_code == 401
    for path in ("/healthz", "/metrics", "/docs", "/openapi.json"):
        assert api.get(path).status_code == 200, path


def test_invalid_and_revoked_keys_are_401(api: TestClient, scored: Scored) -> None:
    for key in ("nonsense", scored.keys["reader"][:-2] + "xx", scored.keys["revoked"]):
        response = api.get("/api/v1/predictions/AAPL", headers={"X-API-Key": key})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid or revoked API key"


def test_missing_scope_is_403(api: TestClient, scored: Scored) -> None:
    response = api.post("/api/v1/score", json={"symbols": ["AAPL"]}, headers=_as(scored, "reader"))
    assert response.status_code == 403
    assert "lacks the 'score' scope" in response.json()["detail"]


def test_rate_limit_is_429_with_retry_after(api: TestClient, scored: Scored) -> None:
    statuses = [api.get("/api/v1/predictions/AAPL", headers=_as(scored, "tight")) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    limited = statuses[-1]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit of 2 per 1 minute" in limited.json()["detail"]
    # Another key is not affected.
    assert api.get("/api/v1/predictions/AAPL", headers=_as(scored, "reader")).status_code == 200


# --- latest predictions --------------------------------------------------------------------


def test_latest_prediction_comes_from_the_champion_models(api: TestClient, scored: Scored) -> None:
    body = api.get("/api/v1/predictions/AAPL", headers=_as(scored, "reader")).json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1+1"
    probabilities, p50 = _expected(scored, "AAPL")
    assert body["probabilities"]["up"] == pytest.approx(probabilities[2], abs=1e-6)
    assert body["p50"] == pytest.approx(p50, abs=1e-6)
    assert body["predicted_price"] == pytest.approx(scored.closes["AAPL"] * (1 + p50), rel=1e-6)
    assert body["predicted_at"].startswith("2024-03-01T13:00:00")
    assert body["data_freshness_sec"] > 0
    assert "features" not in body


def test_include_features_adds_the_online_values(api: TestClient, scored: Scored) -> None:
    body = api.get("/api/v1/predictions/MSFT?include_features=true", headers=_as(scored, "reader")).json()
    newest = scored_features(scored.settings).query("symbol == 'MSFT'").iloc[-1]
    assert set(FEATURES) <= set(body["features"])
    for name in FEATURES:
        assert body["features"][name] == pytest.approx(float(newest[name]))


def test_metrics_of_a_worker_not_started_by_serve_survive_feast(scored: Scored) -> None:
    """Several workers in the settings, but this process not started by `tickcast serve api`
    (e.g. `uvicorn --workers` run by hand): its metrics are its own, in memory. Serving
    include_features goes through Feast, which sets PROMETHEUS_MULTIPROC_DIR to a directory
    of its own; /metrics must still show this process's requests, not that directory's."""
    import os

    settings = scored.settings.model_copy(update={"api_workers": 2})
    with TestClient(create_app(settings), headers=_as(scored, "reader")) as client:
        body = client.get("/api/v1/predictions/MSFT", params={"include_features": "true"}).json()
        assert set(FEATURES) <= set(body["features"])
        assert "PROMETHEUS_MULTIPROC_DIR" in os.environ  # what importing Feast leaves behind
        text = client.get("/metrics").text
    assert 'http_requests_total{handler="/api/v1/predictions/{symbol}",method="GET",status="200"} 1.0' in text


def test_batch_of_predictions(api: TestClient, scored: Scored) -> None:
    response = api.get("/api/v1/predictions", params={"symbols": "MSFT,AAPL,NOPE,AAPL"},
                       headers=_as(scored, "reader"))
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2 and body["missing"] == ["NOPE"]
    assert [p["symbol"] for p in body["predictions"]] == ["MSFT", "AAPL"]
    single = api.get("/api/v1/predictions/MSFT", headers=_as(scored, "reader")).json()
    assert {k: v for k, v in body["predictions"][0].items() if k != "data_freshness_sec"} == {
        k: v for k, v in single.items() if k != "data_freshness_sec"}


@pytest.mark.parametrize(("symbols", "message"), [
    (",,", "give at least one symbol"),
    ("AAPL,bad/sym", "not valid ticker symbols"),
    (",".join(f"S{i}" for i in range(5001)), "at most 5,000"),
])
def test_bad_batches_are_422(api: TestClient, scored: Scored, symbols: str, message: str) -> None:
    response = api.get("/api/v1/predictions", params={"symbols": symbols}, headers=_as(scored, "reader"))
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_batch_of_five_thousand_is_served(api: TestClient, scored: Scored) -> None:
    symbols = ["AAPL", *(f"S{i:04d}" for i in range(4999))]
    body = api.get("/api/v1/predictions", params={"symbols": ",".join(symbols)},
                   headers=_as(scored, "reader")).json()
    assert body["count"] == 1 and len(body["missing"]) == 4999


# --- on-demand scoring ---------------------------------------------------------------------


def test_score_symbols_with_the_champion(api: TestClient, scored: Scored) -> None:
    response = api.post("/api/v1/score", json={"symbols": ["AAPL", "MSFT", "SHORT", "NOPE"]},
                        headers=_as(scored, "scorer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1+1"
    assert [p["symbol"] for p in body["predictions"]] == ["AAPL", "MSFT"]
    assert "only 2 bar(s)" in body["not_scored"]["SHORT"] and body["not_scored"]["NOPE"] == "no features"
    for prediction in body["predictions"]:
        probabilities, p50 = _expected(scored, prediction["symbol"])
        assert prediction["probabilities"]["down"] == pytest.approx(probabilities[0], abs=1e-6)
        assert prediction["p50"] == pytest.approx(p50, abs=1e-6)


def test_score_with_a_named_version_or_the_challenger(api: TestClient, scored: Scored) -> None:
    champion = api.post("/api/v1/score", json={"symbols": ["MSFT"]}, headers=_as(scored, "scorer")).json()
    for version in ("2+2", "challenger"):
        other = api.post("/api/v1/score", json={"symbols": ["MSFT"], "model_version": version},
                         headers=_as(scored, "scorer")).json()
        assert other["model_version"] == "2+2"
        assert other["predictions"][0]["probabilities"] != champion["predictions"][0]["probabilities"]
    mixed = api.post("/api/v1/score", json={"symbols": ["MSFT"], "model_version": "1+2"},
                     headers=_as(scored, "scorer")).json()
    assert mixed["model_version"] == "1+2"


def test_score_a_supplied_sequence(api: TestClient, scored: Scored) -> None:
    sequence = [dict(zip(FEATURES, map(float, row), strict=True)) for row in scored.sequences["AAPL"]]
    response = api.post("/api/v1/score", headers=_as(scored, "scorer"), json={
        "sequences": [{"symbol": "AAPL", "features": sequence, "close": scored.closes["AAPL"],
                       "data_timestamp": "2024-02-01T00:00:00Z"}]})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    probabilities, p50 = _expected(scored, "AAPL")
    assert prediction["probabilities"]["up"] == pytest.approx(probabilities[2], abs=1e-6)
    assert prediction["p50"] == pytest.approx(p50, abs=1e-6)
    assert prediction["data_timestamp"].startswith("2024-02-01T00:00:00")


@pytest.mark.parametrize(("body", "status", "message"), [
    ({}, 422, "exactly one of `symbols` or `sequences`"),
    ({"symbols": ["AAPL"], "sequences": []}, 422, ""),
    ({"symbols": []}, 422, "at least 1"),
    ({"symbols": ["AAPL"], "model_version": "latest"}, 422, "model_version"),
    ({"symbols": ["AAPL"], "surprise": 1}, 422, "surprise"),
    ({"symbols": ["AAPL"], "model_version": "9+9"}, 404, "no model version '9+9'"),
    ({"symbols": ["AAPL"], "interval": "1m"}, 404, "no champion for interval 1m"),
    ({"symbols": ["NOPE"]}, 404, "none of the symbols could be scored"),
    ({"sequences": [{"symbol": "AAPL", "close": 1.0, "features": [{"return_1d": 0.1}]}]}, 422,
     "the models take 3 feature vectors"),
    ({"sequences": [{"symbol": "AAPL", "close": 1.0, "features": [{"return_1d": 0.1}] * 3}]}, 422,
     "missing ['return_5d'"),
    ({"sequences": [{"symbol": "AAPL", "close": -1.0, "features": [{"return_1d": 0.1}] * 3}]}, 422, "close"),
])
def test_bad_score_requests_are_clear_4xx(api: TestClient, scored: Scored, body, status, message) -> None:
    response = api.post("/api/v1/score", json=body, headers=_as(scored, "scorer"))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


# --- history, explanations, models ---------------------------------------------------------


def test_history_from_delta(api: TestClient, scored: Scored) -> None:
    body = api.get("/api/v1/predictions/AAPL/history", headers=_as(scored, "reader")).json()
    assert body["count"] == 2
    assert [p["predicted_at"][:19] for p in body["predictions"]] == ["2024-03-01T12:00:00", "2024-03-01T13:00:00"]
    assert {p["model_version"] for p in body["predictions"]} == {"1+1"}
    later = api.get("/api/v1/predictions/AAPL/history", params={"start": "2024-03-01T12:30:00Z"},
                    headers=_as(scored, "reader")).json()
    assert later["count"] == 1
    newest = api.get("/api/v1/predictions/AAPL/history", params={"limit": 1}, headers=_as(scored, "reader")).json()
    assert newest["predictions"][0]["predicted_at"][:19] == "2024-03-01T13:00:00"
    # A known symbol without history is an empty list; an unknown one is 404; bad ranges are 422.
    assert api.get("/api/v1/predictions/SHORT/history", headers=_as(scored, "reader")).json()["count"] == 0
    assert api.get("/api/v1/predictions/NOPE/history", headers=_as(scored, "reader")).status_code == 404
    bad = api.get("/api/v1/predictions/AAPL/history", params={"start": "2024-03-02", "end": "2024-03-01"},
                  headers=_as(scored, "reader"))
    assert bad.status_code == 422 and bad.json()["detail"] == "query.start: start is after end"


def test_explanation_of_the_latest_prediction(api: TestClient, scored: Scored) -> None:
    response = api.get("/api/v1/explanations/AAPL", headers=_as(scored, "reader"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1+1" and body["method"] == "occlusion"
    assert sorted(a["feature"] for a in body["attributions"]) == sorted(FEATURES)
    probabilities, p50 = _expected(scored, "AAPL")
    assert body["score"] == pytest.approx(probabilities[2] - probabilities[0], abs=1e-6)
    assert body["expected_return"] == pytest.approx(p50, abs=1e-6)
    magnitudes = [abs(a["direction"]) for a in body["attributions"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert body["text"] and "nan" not in body["text"]


def test_explanation_needs_a_model_prediction(api: TestClient, scored: Scored) -> None:
    response = api.get("/api/v1/explanations/BASE", headers=_as(scored, "reader"))
    assert response.status_code == 404
    assert "momentum-baseline" in response.json()["detail"]
    assert api.get("/api/v1/explanations/NOPE", headers=_as(scored, "reader")).status_code == 404


def test_models_lists_champion_and_challenger_with_metrics(api: TestClient, scored: Scored) -> None:
    body = api.get("/api/v1/models", headers=_as(scored, "reader")).json()
    assert body["interval"] == "1d"
    assert body["serving"] == f"{MODEL_NAME} 1+1"
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"tickcast-lstm-1d", "tickcast-transformer-1d"}
    for model in by_name.values():
        assert model["champion"]["version"] == "1" and model["champion"]["metrics"] == {"ic": 0.05, "sharpe": 1.2}
        assert model["challenger"]["version"] == "2" and model["challenger"]["metrics"] == {"ic": 0.07}
    empty = api.get("/api/v1/models", params={"interval": "1m"}, headers=_as(scored, "reader")).json()
    assert all(m["champion"] is None for m in empty["models"])


def test_metrics_show_latency_freshness_model_and_clients(api: TestClient, scored: Scored) -> None:
    api.get("/api/v1/predictions/AAPL", headers=_as(scored, "reader"))
    response = api.get("/metrics")
    text = response.text
    assert response.status_code == 200 and text, (response.status_code, response.headers)
    assert 'http_request_duration_seconds_bucket{handler="/api/v1/predictions/{symbol}"' in text
    assert "tickcast_prediction_data_freshness_seconds_count" in text
    assert f'tickcast_serving_model_info{{model_name="{MODEL_NAME}",model_version="1+1"}} 1.0' in text
    assert "tickcast_websocket_clients 0.0" in text


# --- WebSocket -------------------------------------------------------------------------------


def _write_prediction(scored: Scored, symbol: str, at: datetime) -> None:
    prediction = make_prediction(symbol, at, 100.0).model_copy(update={"predicted_at": at})
    OnlineStore(scored.settings.online_store_path).upsert([prediction])


def test_websocket_pushes_updates_of_subscribed_symbols(api: TestClient, scored: Scored) -> None:
    with api.websocket_connect("/ws/predictions", headers=_as(scored, "reader")) as ws:
        ws.send_json({"action": "subscribe", "symbols": ["AAPL", "WSNEW"]})
        assert ws.receive_json() == {"type": "subscribed", "symbols": ["AAPL", "WSNEW"], "count": 2}
        snapshot = ws.receive_json()  # the current prediction comes first
        assert snapshot["type"] == "prediction_update" and snapshot["prediction"]["symbol"] == "AAPL"
        assert snapshot["prediction"]["model_version"] == "1+1"

        _write_prediction(scored, "WSNEW", datetime.now(UTC))
        update = ws.receive_json()
        assert update["type"] == "prediction_update" and update["prediction"]["symbol"] == "WSNEW"

        ws.send_json({"action": "unsubscribe", "symbols": ["WSNEW"]})
        assert ws.receive_json() == {"type": "unsubscribed", "symbols": ["WSNEW"], "count": 1}
        # An update of the unsubscribed symbol is not sent; the next message is AAPL's.
        _write_prediction(scored, "WSNEW", datetime.now(UTC) + timedelta(seconds=1))
        _write_prediction(scored, "AAPL", datetime.now(UTC) + timedelta(seconds=2))
        assert ws.receive_json()["prediction"]["symbol"] == "AAPL"
        assert "tickcast_websocket_clients 1.0" in api.get("/metrics").text


@pytest.mark.parametrize("message", ['{"action": "dance"}', "not json", '{"action": "subscribe", "symbols": "AAPL"}',
                                     '{"action": "subscribe", "symbols": ["bad/sym"]}'])
def test_websocket_answers_bad_messages_with_an_error_and_stays_open(api: TestClient, scored: Scored,
                                                                    message: str) -> None:
    with api.websocket_connect("/ws/predictions", headers=_as(scored, "reader")) as ws:
        ws.send_text(message)
        error = ws.receive_json()
        assert error["type"] == "error" and error["status"] == 422 and error["detail"]
        ws.send_json({"action": "subscribe", "symbols": []})
        assert ws.receive_json() == {"type": "subscribed", "symbols": [], "count": 0}


def test_websocket_needs_a_valid_key(api: TestClient, scored: Scored) -> None:
    from starlette.websockets import WebSocketDisconnect

    for kwargs, status in (({}, 401), ({"headers": {"X-API-Key": "nonsense"}}, 401)):
        with api.websocket_connect("/ws/predictions", **kwargs) as ws:
            if not kwargs:  # no key: the first message must be one
                ws.send_json({"action": "subscribe", "symbols": ["MSFT"]})
            error = ws.receive_json()
            assert error == {"type": "error", "status": status, "detail": error["detail"]}
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4000 + status
    # Browsers cannot set headers: the key may come as a query parameter.
    with api.websocket_connect(f"/ws/predictions?api_key={scored.keys['reader']}") as ws:
        ws.send_json({"action": "subscribe", "symbols": ["MSFT"]})
        assert ws.receive_json()["type"] == "subscribed"


def test_monitoring_shows_the_newest_monitor_run(api: TestClient, scored: Scored) -> None:
    import pyarrow as pa

    from tickcast.models.watch import MONITORING

    assert api.get("/api/v1/models/monitoring", params={"interval": "1m"},
                   headers=_as(scored, "reader")).json() == {"interval": "1m", "checks": []}
    base = {"interval": "1d", "model_name": MODEL_NAME, "model_version": "1+1", "threshold": None,
            "observations": 120, "details": None}
    rows = [
        {**base, "run_key": "old", "checked_at": FIRST, "kind": "drift", "subject": "rsi_14", "metric": "psi",
         "value": 0.9, "flagged": True},
        {**base, "run_key": "new", "checked_at": FIRST + timedelta(hours=1), "kind": "drift", "subject": "rsi_14",
         "metric": "psi", "value": 0.01, "threshold": 0.25, "flagged": False, "details": '{"ks_pvalue": 0.4}'},
        {**base, "run_key": "new", "checked_at": FIRST + timedelta(hours=1), "kind": "realised",
         "subject": "champion", "metric": "ic", "value": None, "flagged": False, "observations": 0},
    ]
    tables.append_arrow(scored.settings, MONITORING, pa.Table.from_pylist(rows, schema=tables.arrow_schema(MONITORING)))

    assert api.get("/api/v1/models/monitoring").status_code == 401
    body = api.get("/api/v1/models/monitoring", headers=_as(scored, "reader")).json()
    assert body["interval"] == "1d"
    assert [(c["run_key"], c["kind"], c["subject"], c["metric"], c["value"], c["flagged"]) for c in body["checks"]] == [
        ("new", "drift", "rsi_14", "psi", 0.01, False), ("new", "realised", "champion", "ic", None, False)]
    assert body["checks"][0]["details"] == {"ks_pvalue": 0.4} and body["checks"][0]["threshold"] == 0.25
