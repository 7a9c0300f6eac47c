"""The stream scores with the champion models from MLflow, and picks up a new champion
without a restart: real broker, real Spark job, real MLflow registry, real ONNX models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from deltalake import DeltaTable

from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore
from tickcast.catalog.tables import delta_rows
from tickcast.models.bundle import ModelBundle
from tickcast.models.confirmation import confirm
from tickcast.models.untrained import quick_bundles, register_bundles
from tickcast.platform.processes import wait_until

pytestmark = pytest.mark.e2e

DAILY_FILE = Path(__file__).resolve().parents[1] / "data" / "daily_sample.csv"
FEATURES = ["return_1d", "return_5d", "rsi_14", "volatility_5d"]
LENGTH = 3


def _live_tick(symbol: str, price: float, msg_id: str) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({
        "schema_version": 1, "msg_id": msg_id, "symbol": symbol, "ts": now, "price": price,
        "volume": 100.0, "bid": None, "ask": None, "source": "e2e-live", "produced_at": now,
    }).encode()


def _published(bootstrap: str, topic: str) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages, idle = [], 0
    while idle < 5:
        batch = consumer.consume(500, timeout=1.0)
        idle = idle + 1 if not batch else 0
        messages += [json.loads(m.value()) for m in batch if m.error() is None]
    consumer.close()
    return messages


def test_stream_scores_with_the_champion_and_reloads_on_promotion(e2e, tmp_path):
    settings = e2e.settings
    first = register_bundles(settings, quick_bundles(tmp_path / "v1", features=FEATURES, sequence_length=LENGTH))
    assert first == {"tickcast-lstm-1d": "1", "tickcast-transformer-1d": "1"}
    e2e.env["TICKCAST_SCORER_RELOAD_SECONDS"] = "2"
    ingest = e2e.ingest()
    e2e.run_cli("produce", "replay", str(DAILY_FILE), "--symbol", "RPLY")

    store = OnlineStore(settings.online_store_path)
    last_day = datetime(2024, 2, 13, tzinfo=UTC).date()

    def scored_to_the_end() -> bool:
        found = store.get("RPLY")
        return found is not None and found.data_timestamp.date() >= last_day

    wait_until(scored_to_the_end, timeout=300, what="a champion prediction for RPLY's last day",
               on_timeout=ingest.log_tail)
    prediction = store.get("RPLY")
    assert prediction.model_name == "tickcast-lstm-1d+tickcast-transformer-1d"
    assert prediction.model_version == "1+1"

    # The prediction is what the registered ONNX models give on RPLY's last feature vectors.
    features = (
        DeltaTable(tables.table_path(settings, "features")).to_pandas(partitions=[("interval", "=", "1d")])
        .query("symbol == 'RPLY'").sort_values("window_start").tail(LENGTH)
    )
    raw = features[FEATURES].to_numpy(dtype=float)[None]
    lstm = ModelBundle(settings.models_cache_dir / "tickcast-lstm-1d" / "1")
    transformer = ModelBundle(settings.models_cache_dir / "tickcast-transformer-1d" / "1")
    p_lstm, q_lstm = lstm.predict(["RPLY"], raw)
    p_transformer, q_transformer = transformer.predict(["RPLY"], raw)
    assert prediction.probabilities.up == pytest.approx((p_lstm[0, 2] + p_transformer[0, 2]) / 2, abs=1e-6)
    assert prediction.p50 == pytest.approx((q_lstm[0, 1] + q_transformer[0, 1]) / 2, abs=1e-6)
    signal, _ = confirm(p_lstm, p_transformer, 0.4)
    assert prediction.signal == signal[0]

    # A new champion is promoted while the job runs; the next ticks are scored with it.
    second = register_bundles(settings, quick_bundles(tmp_path / "v2", features=FEATURES,
                                                      sequence_length=LENGTH, seed=5))
    assert set(second.values()) == {"2"}
    producer = Producer({"bootstrap.servers": e2e.bootstrap})

    def scored_by_the_new_champion() -> bool:
        producer.produce(e2e.topic, key=b"RPLY", value=_live_tick("RPLY", 185.0, f"live-{datetime.now(UTC)}"))
        producer.flush(10)
        found = store.get("RPLY")
        return found is not None and found.model_version == "2+2"

    wait_until(scored_by_the_new_champion, timeout=300, interval=5, what="a prediction by version 2+2",
               on_timeout=ingest.log_tail)
    assert ingest.alive, ingest.log_tail()

    # Every prediction is in Delta, with its model, and on the Kafka topic.
    history = delta_rows(settings, "predictions").to_pandas().query("symbol == 'RPLY'")
    assert set(history["model_version"]) >= {"1+1", "2+2"}
    assert set(history["model_name"]) == {"tickcast-lstm-1d+tickcast-transformer-1d"}
    published = [m for m in _published(e2e.bootstrap, settings.topic_predictions) if m["symbol"] == "RPLY"]
    assert {m["model_version"] for m in published} >= {"1+1", "2+2"}
    assert len(published) >= len(history)
    assert np.isfinite([m["p50"] for m in published]).all()
