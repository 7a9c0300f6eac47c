"""Market data for serving and dashboard tests: real Delta tables written by Spark and a
real online store, with the rows kept so tests can compare what they read back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from deltalake import DeltaTable

from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore
from tickcast.catalog.tables import ensure_tables, table_defs
from tickcast.core.predictions import Prediction, Probabilities
from tickcast.core.settings import Settings
from tickcast.models.bundle import ModelBundle

DAY0 = datetime(2024, 1, 2, tzinfo=UTC)
MINUTE0 = datetime(2024, 1, 31, 14, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Market:
    settings: Settings
    bars_1d: dict[str, list[tuple]]  # symbol -> rows in ascending time, BAR_COLUMNS order
    bars_1m: dict[str, list[tuple]]
    predictions: dict[str, Prediction]


def bar_rows(symbol: str, start: datetime, step: timedelta, count: int, base: float) -> list[tuple]:
    rows = []
    for i in range(count):
        o = base + i * 0.5
        c = o + (0.75 if i % 3 else -0.4)
        ws = start + i * step
        rows.append((symbol, ws, ws + step, o, max(o, c) + 0.3, min(o, c) - 0.3, c, 1000.0 + i, 10 + i))
    return rows


def write_bars(
    spark, settings: Settings, table: str, rows: list[tuple],
    written_at: datetime = datetime(2024, 2, 1, tzinfo=UTC),
) -> None:
    """Append bars the way the streaming job stores them (all columns of delta/tables.json)."""
    full = [(*r, r[1], r[2] - timedelta(microseconds=1), written_at) for r in rows]
    df = spark.createDataFrame(full, table_defs()[table].schema())
    df.write.format("delta").mode("append").save(tables.table_path(settings, table))


def make_prediction(symbol: str, data_timestamp: datetime, price: float) -> Prediction:
    return Prediction(
        symbol=symbol,
        horizon="1d",
        predicted_return=0.0123,
        predicted_price=round(price * 1.0123, 4),
        # The quantiles are forward returns, like predicted_return (the contract).
        p10=-0.02,
        p50=0.0123,
        p90=0.04,
        probabilities=Probabilities(up=0.55, neutral=0.25, down=0.2),
        signal="BUY",
        confidence=0.55,
        model_name="momentum-baseline",
        model_version="1",
        data_timestamp=data_timestamp,
        predicted_at=datetime(2024, 2, 1, 0, 0, 5, tzinfo=UTC),
    )


def build_market(spark, settings: Settings) -> Market:
    ensure_tables(spark, settings, ["bars_1d", "bars_1m"])
    bars_1d = {
        "AAPL": bar_rows("AAPL", DAY0, timedelta(days=1), 30, 180.0),
        "MSFT": bar_rows("MSFT", DAY0, timedelta(days=1), 30, 370.0),
        "NOPRED": bar_rows("NOPRED", DAY0, timedelta(days=1), 5, 12.0),
    }
    bars_1m = {"AAPL": bar_rows("AAPL", MINUTE0, timedelta(minutes=1), 90, 190.0)}
    # Written newest first, so that ascending output is the reader's doing, not the writer's.
    write_bars(spark, settings, "bars_1d", [r for rows in bars_1d.values() for r in reversed(rows)])
    write_bars(spark, settings, "bars_1m", bars_1m["AAPL"][::-1])
    predictions = {
        s: make_prediction(s, bars_1d[s][-1][2], bars_1d[s][-1][6]) for s in ("AAPL", "MSFT")
    }
    predictions["PREDONLY"] = make_prediction("PREDONLY", DAY0, 50.0)
    OnlineStore(settings.online_store_path).upsert(list(predictions.values()))
    return Market(settings, bars_1d, bars_1m, predictions)


# --- a platform state with real models (API v1 tests) -------------------------------

FEATURES = ["return_1d", "return_5d", "rsi_14", "volatility_5d"]
LENGTH = 3
FIRST = datetime(2024, 3, 1, 12, tzinfo=UTC)


@dataclass
class Scored:
    settings: Settings
    keys: dict[str, str]
    sequences: dict[str, np.ndarray]  # symbol -> its last LENGTH raw feature vectors
    closes: dict[str, float]
    bundles: dict[str, dict[str, ModelBundle]]  # version -> arch -> bundle


def scored_features(settings: Settings):
    return (DeltaTable(tables.table_path(settings, "features")).to_pandas(partitions=[("interval", "=", "1d")])
            .sort_values(["symbol", "window_start"]))


def build_scored(spark, base_settings: Settings, root: Path) -> Scored:
    """A platform state with real (quickly fitted) models: bars and features of AAPL, MSFT, MKT
    and SHORT, champion v1 and challenger v2 registered in MLflow, two rounds of champion
    predictions in the online store and Delta, and API keys."""
    from spark_jobs.features_backfill import backfill_features
    from tickcast.catalog import featurestore
    from tickcast.core.predictions import frame_to_arrow
    from tickcast.models.untrained import quick_bundles, register_bundles
    from tickcast.scoring.models import ModelLoader
    from tickcast.scoring.score import score
    from tickcast.scoring.sources import latest_sequences

    settings = base_settings.model_copy(update={"home": root / "home", "api_key_cache_seconds": 0.0})
    ensure_tables(spark, settings)
    rows = [r for symbol, base in (("AAPL", 180.0), ("MSFT", 370.0), ("MKT", 4000.0))
            for r in bar_rows(symbol, DAY0, timedelta(days=1), 30, base)]
    rows += bar_rows("SHORT", DAY0, timedelta(days=1), 2, 10.0)
    write_bars(spark, settings, "bars_1d", rows)
    backfill_features(spark, settings, intervals=("1d",))
    features = scored_features(settings)
    featurestore.push_online(settings, features.groupby("symbol").tail(1))

    first = quick_bundles(root / "v1", features=FEATURES, sequence_length=LENGTH, children=("AAPL",))
    register_bundles(settings, first, metrics={"ic": 0.05, "sharpe": 1.2})
    second = quick_bundles(root / "v2", features=FEATURES, sequence_length=LENGTH, seed=9)
    register_bundles(settings, second, champion=False, metrics={"ic": 0.07})

    # Two rounds of champion predictions, in the online store and in Delta, as the stream writes them.
    dual = ModelLoader(settings).dual("1d")
    batch, _ = latest_sequences(settings, ["AAPL", "MSFT"], "1d", dual.features, dual.sequence_length)
    for i in range(2):
        frame = score(dual, batch, predicted_at=FIRST + timedelta(hours=i))
        OnlineStore(settings.online_store_path).upsert_frame(frame)
        tables.append_arrow(settings, tables.PREDICTIONS, frame_to_arrow(frame))
    OnlineStore(settings.online_store_path).upsert([make_prediction("BASE", DAY0, 50.0)])

    store = ApiKeyStore(settings.api_keys_path)
    keys = {name: store.create(name, scopes, rate_limit=limit)[1] for name, scopes, limit in (
        ("reader", ["read"], "100000/second"), ("scorer", ["read", "score"], "100000/second"),
        ("tight", ["read"], "2/minute"), ("revoked", ["read"], None))}
    store.revoke("revoked")
    sequences = {s: features[features.symbol == s][FEATURES].to_numpy(dtype=float)[-LENGTH:] for s in ("AAPL", "MSFT")}
    closes = {s: [r for r in rows if r[0] == s][-1][6] for s in ("AAPL", "MSFT")}
    bundles = {v: {arch: ModelBundle(settings.models_cache_dir / f"tickcast-{arch}-1d" / v)
                   for arch in ("lstm", "transformer")} for v in ("1",)}
    return Scored(settings, keys, sequences, closes, bundles)
