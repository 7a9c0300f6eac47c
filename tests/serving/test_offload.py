"""The expensive reads in the app's pool of processes (serving/offload.py): history and bars answer
what the services read, their errors keep their statuses, and a pool process that dies is a 503
for the request it held and a fresh pool for the next."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.offload import OffloadPool, history_body
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog import predictions, tables
from tickcast.core.errors import Unavailable
from tickcast.core.predictions import Prediction, arrow_schema
from tickcast.core.settings import Settings

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _prediction(symbol: str, day: int) -> Prediction:
    return Prediction(symbol=symbol, horizon="1d", predicted_return=0.001 * day, predicted_price=100 + day,
                      p10=-0.01, p50=0.0, p90=0.01, probabilities={"up": 0.5, "neutral": 0.3, "down": 0.2},
                      signal="HOLD", confidence=0.5, model_name="lstm+transformer", model_version="1+1",
                      data_timestamp=T0 + timedelta(days=day), predicted_at=T0 + timedelta(days=day, minutes=1))


@pytest.fixture
def stored(settings: Settings) -> Settings:
    """Settings whose Delta tables hold a few predictions and daily bars of A and B."""
    settings = settings.model_copy(update={"scorer_publish_kafka": False})
    rows = [_prediction(symbol, day).model_dump() for symbol in ("A", "B") for day in range(5)]
    tables.append_arrow(settings, tables.PREDICTIONS, pa.Table.from_pylist(rows, schema=arrow_schema()))
    bars = [{"symbol": symbol, "window_start": T0 + timedelta(days=day), "window_end": T0 + timedelta(days=day + 1),
             "open": 10.0 + day, "high": 11.0 + day, "low": 9.0 + day, "close": 10.5 + day, "volume": 100.0,
             "trades": 7} for symbol in ("A", "B") for day in range(5)]
    tables.append_arrow(settings, "bars_1d", pa.Table.from_pylist(bars, schema=tables.arrow_schema("bars_1d")))
    return settings


def _key(settings: Settings) -> dict[str, str]:
    return {"X-API-Key": ApiKeyStore(settings.api_keys_path).create("reader", ["read"])[1]}


def test_history_and_bars_answer_from_the_pool(stored: Settings) -> None:
    with TestClient(create_app(stored), headers=_key(stored)) as client:
        history = client.get("/api/v1/predictions/A/history", params={"limit": 3})
        bars = client.get("/api/v1/bars/B", params={"limit": 2})
        # A service error raised in a pool process keeps its status and says where the input was wrong.
        backwards = client.get("/api/v1/predictions/A/history",
                               params={"start": "2024-03-04T00:00:00Z", "end": "2024-03-02T00:00:00Z"})
        # No rows: the known-symbol check, in the API's process, tells an empty answer from a 404.
        unknown = client.get("/api/v1/bars/NOPE")
        empty = client.get("/api/v1/predictions/A/history", params={"start": "2030-01-01T00:00:00Z"})

    assert history.status_code == 200 and history.headers["content-type"] == "application/json"
    expected = predictions.history(stored, "A", limit=3)
    assert [p.predicted_at for p in expected] == [T0 + timedelta(days=d, minutes=1) for d in (2, 3, 4)]
    assert history.json() == {"symbol": "A", "count": 3,
                              "predictions": [p.model_dump(mode="json") for p in expected]}
    assert bars.status_code == 200
    body = bars.json()
    assert (body["symbol"], body["interval"], body["count"]) == ("B", "1d", 2)
    assert [b["close"] for b in body["bars"]] == [13.5, 14.5]
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["loc"] == ["query", "start"]
    assert "start is after end" in backwards.json()["detail"]
    assert unknown.status_code == 404 and "unknown symbol 'NOPE'" in unknown.json()["detail"]
    assert empty.status_code == 200 and empty.json() == {"symbol": "A", "count": 0, "predictions": []}


def test_an_app_that_was_not_started_answers_503_not_500(stored: Settings) -> None:
    client = TestClient(create_app(stored), headers=_key(stored), raise_server_exceptions=False)  # no lifespan
    response = client.get("/api/v1/predictions/A/history")
    assert response.status_code == 503
    assert "pool for expensive requests is not running" in response.json()["detail"]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_pool_process_that_dies_is_unavailable_then_replaced(stored: Settings) -> None:
    async def scenario() -> tuple[str, tuple[int, bytes]]:
        pool = OffloadPool(stored)
        await pool.start()
        try:
            with pytest.raises(Unavailable) as died:
                await pool.run(_die)
            return died.value.message, await pool.run(history_body, "B", None, None, 2)
        finally:
            await pool.stop()

    message, (count, body) = asyncio.run(scenario())
    assert message == "the process serving this request stopped unexpectedly; retry in 1 s"
    assert count == 2 and body.startswith(b'{"symbol":"B","count":2,')
