"""A locked online store (another process holding SQLite's write lock, an open exclusive
transaction): what reads it answers 503 with a reason and a Retry-After, never a 500, and
answers normally once the lock goes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.faults.test_scorer_faults import LOCKER
from tests.serving.market_data import FEATURES, Scored


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """``path``'s SQLite database held in an exclusive transaction by another process."""
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.close()
        assert locker.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def api(scored: Scored) -> Iterator[TestClient]:
    settings = scored.settings.model_copy(update={"api_expensive_rate_limit": "100000/second"})
    with TestClient(create_app(settings), headers={"X-API-Key": scored.keys["reader"]}) as client:
        yield client


def test_features_of_a_locked_feature_store_are_503_with_retry_after_then_served(api: TestClient,
                                                                                   scored: Scored) -> None:
    url = "/api/v1/predictions/MSFT?include_features=true"
    assert set(FEATURES) <= set(api.get(url).json()["features"])  # the store opened before it locks
    with locked(scored.settings.feast_dir / "online.db"):
        response = api.get(url)
        assert response.status_code == 503, response.text
        assert "the online feature store cannot be read" in response.json()["detail"]
        assert "locked" in response.json()["detail"]
        assert int(response.headers["Retry-After"]) >= 1
        # What does not read the feature store is served all the same.
        assert api.get("/api/v1/predictions/MSFT").status_code == 200
    body = api.get(url).json()
    assert set(FEATURES) <= set(body["features"])


def test_a_locked_prediction_store_never_makes_a_500(api: TestClient, scored: Scored) -> None:
    """The predictions' store (WAL: readers are not blocked by a writer's lock) serves its reads
    while locked: the latest prediction, a symbol without one, the list of symbols, health."""
    with locked(scored.settings.online_store_path):
        assert api.get("/api/v1/predictions/MSFT").status_code == 200
        statuses = {path: api.get(path).status_code for path in (
            "/api/v1/predictions/NOPE", "/api/v1/predictions?symbols=MSFT,NOPE", "/api/v1/symbols",
            "/api/v1/predictions/MSFT/history", "/healthz")}
    assert statuses == {"/api/v1/predictions/NOPE": 404, "/api/v1/predictions?symbols=MSFT,NOPE": 200,
                        "/api/v1/symbols": 200, "/api/v1/predictions/MSFT/history": 200, "/healthz": 200}
