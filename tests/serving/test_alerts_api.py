"""/api/v1/alerts: rules CRUD with the admin scope, history with read, clear 4xx for every
refusal, and the routes in the OpenAPI document."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tickcast.alerts.evaluate import Evaluator
from tickcast.alerts.store import AlertStore
from tickcast.auth.apikeys import ApiKeyStore

RULE = {"name": "buy-s0001", "on_signal": {"signal": "BUY", "min_confidence": 0.6}, "symbols": ["S0001"],
        "recipients": [{"channel": "sms", "address": "+15551234567"}], "throttle_seconds": 600}


@pytest.fixture
def client(settings):
    keys = ApiKeyStore(settings.api_keys_path)
    admin, reader = keys.create("ops", ["admin"])[1], keys.create("reader", ["read"])[1]
    with TestClient(create_app(settings)) as client:
        client.admin, client.reader = {"X-API-Key": admin}, {"X-API-Key": reader}
        yield client


def test_rules_crud_with_the_admin_scope(client):
    created = client.post("/api/v1/alerts/rules", json=RULE, headers=client.admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == 1 and body["name"] == "buy-s0001" and body["on_signal"]["min_confidence"] == 0.6
    assert client.get("/api/v1/alerts/rules", headers=client.admin).json()["count"] == 1
    assert client.get("/api/v1/alerts/rules/buy-s0001", headers=client.admin).json()["id"] == 1
    replaced = client.put("/api/v1/alerts/rules/1", json={**RULE, "enabled": False}, headers=client.admin)
    assert replaced.status_code == 200 and replaced.json()["enabled"] is False
    assert client.delete("/api/v1/alerts/rules/buy-s0001", headers=client.admin).json()["id"] == 1
    assert client.get("/api/v1/alerts/rules", headers=client.admin).json() == {"count": 0, "rules": []}


@pytest.mark.parametrize(("method", "path", "body", "status", "detail"), [
    ("get", "/api/v1/alerts/rules/nope", None, 404, "no rule 'nope'"),
    ("delete", "/api/v1/alerts/rules/7", None, 404, "no rule '7'"),
    ("post", "/api/v1/alerts/rules", {**RULE, "recipients": []}, 422, "recipients: List should have at least 1 item"),
    ("post", "/api/v1/alerts/rules", {**RULE, "on_pipeline": {"kinds": ["drift"]}}, 422, "exactly one of"),
    ("post", "/api/v1/alerts/rules", {**RULE, "recipients": [{"channel": "sms", "address": "12"}]}, 422, "E.164"),
])
def test_refusals_are_clear_4xx(client, method, path, body, status, detail):
    response = client.request(method, path, json=body, headers=client.admin)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_a_taken_name_is_a_409(client):
    assert client.post("/api/v1/alerts/rules", json=RULE, headers=client.admin).status_code == 201
    again = client.post("/api/v1/alerts/rules", json=RULE, headers=client.admin)
    assert again.status_code == 409 and "exists already" in again.json()["detail"]


def test_rules_need_admin_and_history_needs_read(client):
    assert client.get("/api/v1/alerts/rules", headers=client.reader).status_code == 403
    assert client.post("/api/v1/alerts/rules", json=RULE, headers=client.reader).status_code == 403
    assert client.get("/api/v1/alerts/rules").status_code == 401
    assert client.get("/api/v1/alerts/history", headers=client.admin).status_code == 403
    assert client.get("/api/v1/alerts/history", headers=client.reader).json() == {"count": 0, "alerts": []}


def test_history_shows_alerts_with_masked_recipients(client, settings):
    client.post("/api/v1/alerts/rules", json=RULE, headers=client.admin)
    store = AlertStore(settings.alerts_db_url)
    Evaluator(store, rules_ttl=0).prediction({"symbol": "S0001", "signal": "BUY", "confidence": 0.8,
                                              "predicted_return": 0.01, "data_timestamp": "2026-12-04T15:00:00Z"})
    store.close()
    body = client.get("/api/v1/alerts/history", params={"rule": "buy-s0001"}, headers=client.reader).json()
    assert body["count"] == 1
    [alert] = body["alerts"]
    assert (alert["subject"], alert["phase"], alert["status"]) == ("S0001", "firing", "queued")
    assert alert["deliveries"][0]["recipient"] == "+15***67"
    assert "+15551234567" not in str(body)
    assert client.get("/api/v1/alerts/history", params={"limit": 0}, headers=client.reader).status_code == 422


def test_alert_routes_are_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/alerts/rules", "/api/v1/alerts/rules/{rule}", "/api/v1/alerts/history"} <= set(paths)
    assert set(paths["/api/v1/alerts/rules/{rule}"]) == {"get", "put", "delete"}
