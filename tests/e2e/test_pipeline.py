"""End to end on real parts: CLI feeds -> real Kafka broker -> Spark ingest job -> Delta, and the
live scorer -> online store -> API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from chispa import assert_df_equality
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore
from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.catalog.topics import topic_message_count
from tickcast.platform.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAILY_FILE = Path(__file__).resolve().parents[1] / "data" / "daily_sample.csv"


def _good_tick(msg_id: str, **overrides) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    tick = {
        "schema_version": 1, "msg_id": msg_id, "symbol": "BADS", "ts": now, "price": 10.0,
        "volume": 5.0, "bid": None, "ask": None, "source": "e2e-malformed", "produced_at": now,
    }
    tick.update(overrides)
    return tick


# raw payload -> the reason it must be quarantined with
MALFORMED: dict[bytes, str] = {
    b"{this is not json": "invalid_json",
    json.dumps({"schema_version": 1, "msg_id": "m-missing", "symbol": "BADS"}).encode(): "missing_or_invalid:ts",
    json.dumps(_good_tick("m-negative", price=-3.5)).encode(): "invalid_price",
    # Python's json writes NaN as a bare literal, as careless producers do.
    json.dumps(_good_tick("m-nan", price=float("nan"))).encode(): "invalid_price",
    json.dumps(_good_tick("m-version", schema_version=99)).encode(): "unsupported_schema_version",
}


def _produce_raw(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for payload in payloads:
        producer.produce(topic, key=b"BADS", value=payload)
    assert producer.flush(30) == 0


def test_ticks_flow_to_delta_bars_and_api(e2e, spark):
    settings = e2e.settings
    # The live scorer makes the predictions the API serves. It reads `ticks` from the newest
    # offset, so it is running before the feeds start.
    scorer = e2e.scorer()
    wait_until(lambda: "live scorer running" in scorer.log_path.read_text(), timeout=180,
               what="the live scorer to start", on_timeout=scorer.log_tail)
    ingest = e2e.ingest()

    e2e.run_cli("produce", "synthetic", "--symbols", "4", "--rate", "200", "--seconds", "3", "--seed", "7")
    _produce_raw(e2e.bootstrap, e2e.topic, list(MALFORMED))
    e2e.run_cli("produce", "replay", str(DAILY_FILE), "--symbol", "RPLY")
    # Good ticks after the bad ones: the query must still be running to store them.
    e2e.run_cli("produce", "synthetic", "--symbols", "4", "--rate", "200", "--seconds", "2", "--seed", "8")

    produced = topic_message_count(e2e.bootstrap, e2e.topic)
    expected_replay = pd.read_csv(DAILY_FILE)
    assert produced > len(MALFORMED) + 4 * len(expected_replay)

    wait_until(
        lambda: delta_count(settings, "ticks") + delta_count(settings, "quarantine") >= produced,
        timeout=600, what=f"all {produced} messages in ticks or quarantine",
        on_timeout=ingest.log_tail,
    )
    assert ingest.alive, ingest.log_tail()

    # Every message is in exactly one place.
    ticks = delta_rows(settings, "ticks").to_pandas()
    quarantine = delta_rows(settings, "quarantine").to_pandas()
    assert len(ticks) + len(quarantine) == produced
    assert ticks["msg_id"].is_unique

    # Each malformed message is quarantined with its reason; nothing else is.
    reasons = dict(zip(quarantine["raw"].str.encode("utf-8"), quarantine["reason"], strict=True))
    assert reasons == MALFORMED

    # Bars are folded in after the ticks are stored, in the same micro-batch.
    def bars_account_for_every_tick() -> bool:
        sums = [delta_rows(settings, f"bars_{i}", ["trades"]) for i in ("1m", "1d")]
        return all(b is not None and b.column("trades").to_pandas().sum() == len(ticks) for b in sums)

    wait_until(bars_account_for_every_tick, timeout=300, what="bars for every stored tick",
               on_timeout=ingest.log_tail)

    # The replayed file's bars come out of the stream exactly as they went in.
    expected = spark.createDataFrame(
        [
            ("RPLY", datetime.fromisoformat(r.Date).replace(tzinfo=UTC),
             float(r.Open), float(r.High), float(r.Low), float(r.Close), float(r.Volume))
            for r in expected_replay.itertuples()
        ],
        "symbol string, window_start timestamp, open double, high double, low double, close double, volume double",
    )
    actual = (
        spark.read.format("delta").load(tables.table_path(settings, "bars_1d"))
        .where("symbol = 'RPLY'")
        .select("symbol", "window_start", "open", "high", "low", "close", "volume")
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)

    # Bars account for every stored tick, once.
    bars_1m = delta_rows(settings, "bars_1m", ["symbol", "trades", "volume"]).to_pandas()
    assert bars_1m["trades"].sum() == len(ticks)
    assert bars_1m["volume"].sum() == pytest.approx(ticks["volume"].sum())

    # The API serves a prediction with the whole contract for every symbol that traded.
    from serving.app import create_app

    symbols = sorted(ticks["symbol"].unique())
    assert "RPLY" in symbols and "MKT" in symbols
    store = OnlineStore(settings.online_store_path)
    wait_until(
        lambda: set(symbols) <= set(store.symbols()), timeout=120,
        what="a prediction for every symbol", on_timeout=scorer.log_tail,
    )
    _, key = ApiKeyStore(settings.api_keys_path).create("e2e", ["read"])
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        for symbol in symbols:
            response = client.get(f"/api/v1/predictions/{symbol}")
            assert response.status_code == 200, (symbol, response.text)
            body = response.json()
            for field in ("symbol", "horizon", "predicted_return", "predicted_price", "p10", "p50",
                          "p90", "probabilities", "signal", "confidence", "model_name",
                          "model_version", "data_timestamp", "predicted_at"):
                assert field in body, field
            assert body["symbol"] == symbol
            assert body["signal"] in {"BUY", "SELL", "HOLD"}
            assert body["p10"] <= body["p50"] <= body["p90"]
        # The replayed history's last close is what the RPLY prediction is based on.
        rply = client.get("/api/v1/predictions/RPLY").json()
        last_date = datetime.fromisoformat(expected_replay["Date"].iloc[-1]).date()
        assert datetime.fromisoformat(rply["data_timestamp"].replace("Z", "+00:00")).date() == last_date
