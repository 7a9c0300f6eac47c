"""The live scorer as the platform runs it: a real broker, `tickcast stream score` as a
process, the champion models from a real MLflow registry, Delta written by the real batch
jobs. A tick is in a served prediction within a cycle; a promotion is picked up live; every
prediction reaches the online store, the API, the `predictions` topic and Delta."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.invariants import topic_messages
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore
from tickcast.catalog.tables import delta_rows
from tickcast.features.compute import compute_features
from tickcast.models.bundle import ModelBundle
from tickcast.models.untrained import quick_bundles, register_bundles
from tickcast.platform.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAILY_FILE = Path(__file__).resolve().parents[1] / "data" / "daily_sample.csv"
FEATURES = ["return_1d", "return_5d", "rsi_14", "volatility_5d"]
LENGTH = 3


def _tick(symbol: str, price: float, msg_id: str, volume: float = 100.0) -> tuple[bytes, pd.Timestamp]:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    value = json.dumps({"schema_version": 1, "msg_id": msg_id, "symbol": symbol, "ts": stamp, "price": price,
                        "volume": volume, "bid": None, "ask": None, "source": "e2e-live", "produced_at": stamp})
    return value.encode(), pd.Timestamp(now)


def test_live_scorer_scores_each_tick_with_the_champion_and_reloads_on_promotion(e2e, tmp_path):
    settings = e2e.settings
    e2e.run_cli("backfill", str(DAILY_FILE), "--symbol", "RPLY")
    e2e.run_cli("features", "backfill", "--interval", "1d")
    assert register_bundles(settings, quick_bundles(tmp_path / "v1", features=FEATURES, sequence_length=LENGTH)) \
        == {"tickcast-lstm-1d": "1", "tickcast-transformer-1d": "1"}
    # Delta reloads every 3 s here (300 s by default): they run beside the scoring throughout.
    scorer = e2e.scorer(TICKCAST_SCORER_RELOAD_SECONDS="2", TICKCAST_LIVE_HISTORY_SECONDS="1",
                        TICKCAST_LIVE_RELOAD_SECONDS="3")
    wait_until(lambda: "live scorer running" in scorer.log_path.read_text(), timeout=180,
               what="the live scorer to start", on_timeout=scorer.log_tail)
    assert "tickcast-lstm-1d+tickcast-transformer-1d version 1+1" in scorer.log_tail()

    producer = Producer({"bootstrap.servers": e2e.bootstrap})
    store = OnlineStore(settings.online_store_path)
    sent: list[tuple[float, float, pd.Timestamp]] = []  # price, volume, ts of RPLY's ticks today

    def send(price: float, volume: float) -> pd.Timestamp:
        value, ts = _tick("RPLY", price, f"live-{len(sent)}", volume)
        producer.produce(e2e.topic, key=b"RPLY", value=value)
        producer.flush(10)
        sent.append((price, volume, ts))
        return ts

    def served_at_least(ts: pd.Timestamp):
        def check() -> bool:
            found = store.get("RPLY")
            return found is not None and pd.Timestamp(found.data_timestamp) >= ts
        return check

    # The scorer starts at the newest offset: send until a tick sent after it started is scored.
    def newest_sent_is_served() -> bool:
        if sent and served_at_least(sent[-1][2])():
            return True
        send(185.0 + len(sent) / 100, 100.0)
        return False

    wait_until(newest_sent_is_served, timeout=120, interval=2, what="a prediction of a tick sent after the start",
               on_timeout=scorer.log_tail)
    last = send(186.25, 40.0)
    wait_until(served_at_least(last), timeout=60, interval=0.2, what="the newest tick in a prediction",
               on_timeout=scorer.log_tail)
    prediction = store.get("RPLY")
    assert pd.Timestamp(prediction.data_timestamp) == last
    assert prediction.model_name == "tickcast-lstm-1d+tickcast-transformer-1d"
    assert prediction.model_version == "1+1"

    # It is what the models give on the stored bars and today's open bar, whose close is the last tick.
    bars = DeltaTable(tables.table_path(settings, "bars_1d")).to_pandas().query("symbol == 'RPLY'")
    today = pd.Timestamp(last.date(), tz="UTC")
    open_bar = {"symbol": "RPLY", "window_start": today, "window_end": today + pd.Timedelta(days=1),
                "open": np.nan, "high": np.nan, "low": np.nan, "close": 186.25, "volume": np.nan}
    reference = compute_features(pd.concat([bars, pd.DataFrame([open_bar])], ignore_index=True), "1d")
    raw = reference.sort_values("window_start").tail(LENGTH)[FEATURES].to_numpy(dtype=float)[None]
    lstm = ModelBundle(settings.models_cache_dir / "tickcast-lstm-1d" / "1").predict(["RPLY"], raw)
    transformer = ModelBundle(settings.models_cache_dir / "tickcast-transformer-1d" / "1").predict(["RPLY"], raw)
    assert prediction.probabilities.up == pytest.approx((lstm[0][0, 2] + transformer[0][0, 2]) / 2, abs=1e-6)
    assert prediction.p50 == pytest.approx((lstm[1][0, 1] + transformer[1][0, 1]) / 2, abs=1e-6)
    assert prediction.predicted_price == pytest.approx(186.25 * (1 + prediction.p50))

    # The API serves it.
    _, key = ApiKeyStore(settings.api_keys_path).create("e2e-live", ["read"])
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        body = client.get("/api/v1/predictions/RPLY").json()
    assert body["model_version"] == "1+1" and pd.Timestamp(body["data_timestamp"]) == last

    # A promotion is picked up without a restart.
    assert set(register_bundles(settings, quick_bundles(tmp_path / "v2", features=FEATURES, sequence_length=LENGTH,
                                                        seed=5)).values()) == {"2"}

    def scored_by_the_new_champion() -> bool:
        send(187.0, 10.0)
        found = store.get("RPLY")
        return found is not None and found.model_version == "2+2"

    wait_until(scored_by_the_new_champion, timeout=120, interval=2, what="a prediction by version 2+2",
               on_timeout=scorer.log_tail)

    # The periodic Delta reloads ran beside the scoring (waited for: a fast run can get here within two periods).
    wait_until(lambda: scorer.log_path.read_text().count("feature rows of 1 symbols from Delta") >= 3, timeout=60,
               interval=0.5, what="three reloads from Delta", on_timeout=scorer.log_tail)

    # Every prediction is on the topic and in Delta (the last buffered ones flushed on the way out).
    scorer.stop()
    assert scorer.proc.returncode == 0, scorer.log_tail()
    assert "live scorer stopped" in scorer.log_tail()
    log = scorer.log_path.read_text()
    assert "reload from Delta failed" not in log
    published = [m for m in topic_messages(e2e.bootstrap, settings.topic_predictions, idle_polls=5) if m["symbol"] == "RPLY"]
    assert {m["model_version"] for m in published} >= {"1+1", "2+2"}
    history = delta_rows(settings, "predictions").to_pandas().query("symbol == 'RPLY'")
    assert len(history) == len(published)
    stored = pd.to_datetime(history["predicted_at"], utc=True).astype("datetime64[us, UTC]")
    sent_out = pd.to_datetime([m["predicted_at"] for m in published], utc=True).astype("datetime64[us, UTC]")
    assert sorted(stored) == sorted(sent_out)


def test_a_killed_scorer_resumes_its_open_bars_with_no_tick_missed_or_counted_twice(e2e):
    """SIGKILL at a checkpointed point (its ticks saved) and at an unsaved one (its ticks read
    again from the saved offsets): the open bar ends as the fold of every tick, once each."""
    from tickcast.scoring.live_job import checkpoint_path

    settings = e2e.settings
    e2e.run_cli("backfill", str(DAILY_FILE), "--symbol", "RSTR")
    store = OnlineStore(settings.online_store_path)
    producer = Producer({"bootstrap.servers": e2e.bootstrap})
    sent: list[tuple[float, float]] = []
    checkpoint = checkpoint_path(settings)

    def send(n: int) -> pd.Timestamp:
        for _ in range(n):
            price, volume = 180.0 + (len(sent) * 7) % 11, float(1 + len(sent))
            value, ts = _tick("RSTR", price, f"restart-{len(sent)}", volume)
            producer.produce(e2e.topic, key=b"RSTR", value=value)
            sent.append((price, volume))
        producer.flush(10)
        return ts

    def served(ts: pd.Timestamp):
        return lambda: (found := store.get("RSTR")) is not None and pd.Timestamp(found.data_timestamp) >= ts

    def saved_trades() -> int:
        try:
            return json.loads(checkpoint.read_bytes())["market"]["open"]["RSTR"][6]
        except (FileNotFoundError, KeyError, ValueError):
            return -1

    first = e2e.scorer(TICKCAST_LIVE_CHECKPOINT_SECONDS="1")
    # Without a checkpoint it starts at the newest offset: send until a tick is in a saved open bar.
    def a_tick_is_saved() -> bool:
        if saved_trades() > 0:
            return True
        send(1)
        return False

    wait_until(a_tick_is_saved, timeout=180, interval=2, what="a first tick in the scorer's checkpoint",
               on_timeout=first.log_tail)
    skipped_at_start = len(sent) - saved_trades()
    send(5)
    wait_until(lambda: saved_trades() == len(sent) - skipped_at_start, timeout=60, interval=0.5,
               what="the ticks in the checkpoint", on_timeout=first.log_tail)
    first.kill()  # at a checkpointed point
    send(4)  # while no scorer runs

    second = e2e.scorer(TICKCAST_LIVE_CHECKPOINT_SECONDS="3600")
    wait_until(served(send(3)), timeout=180, interval=0.5, what="the restarted scorer serving the newest tick",
               on_timeout=second.log_tail)
    second.kill()  # nothing it folded was saved: the next run reads those ticks again
    send(2)

    third = e2e.scorer(TICKCAST_LIVE_CHECKPOINT_SECONDS="1")
    wait_until(served(send(1)), timeout=180, interval=0.5, what="the third scorer serving the newest tick",
               on_timeout=third.log_tail)
    third.stop()
    assert third.proc.returncode == 0, third.log_tail()
    assert "restored" in third.log_path.read_text()

    # `tickcast status` sees the scorer as a query, caught up with the topic.
    from tickcast.catalog.progress import read_progress
    from tickcast.platform.status import kafka_lag, query_status, topic_watermarks

    reported = read_progress(settings)["scorer"]
    assert kafka_lag(reported, topic_watermarks(settings, [e2e.topic])) == {e2e.topic: 0}
    assert query_status("scorer", reported, None).name == "scorer"

    counted = sent[skipped_at_start:]
    window_start, open_, high, low, close, volume, trades, _, _ = json.loads(checkpoint.read_bytes())["market"][
        "open"]["RSTR"]
    assert trades == len(counted)
    assert (open_, close) == (counted[0][0], counted[-1][0])
    assert (high, low) == (max(p for p, _ in counted), min(p for p, _ in counted))
    assert volume == pytest.approx(sum(v for _, v in counted))
