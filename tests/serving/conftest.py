"""Fixtures for the API tests.

The market tables are written once per session (Spark commits take seconds) under a home of
their own; tests here only read them. Tests that need another state use `settings`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.serving.market_data import (
    DAY0,
    FEATURES,
    FIRST,
    LENGTH,
    Market,
    Scored,
    bar_rows,
    build_market,
    make_prediction,
    scored_features,
    write_bars,
)
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog import tables
from tickcast.catalog.online import OnlineStore
from tickcast.core.settings import Settings
from tickcast.models.bundle import ModelBundle


@pytest.fixture(scope="session")
def market(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Market:
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("market") / "home"})
    return build_market(spark, settings)


@pytest.fixture(scope="session")
def api_keys(market: Market) -> dict[str, str]:
    """Keys in the market home: `reader` (read), `scorer` (read, score), `tight` (read, 2 a minute)."""
    store = ApiKeyStore(market.settings.api_keys_path)
    return {
        "reader": store.create("reader", ["read"], rate_limit="100000/second")[1],
        "scorer": store.create("scorer", ["read", "score"], rate_limit="100000/second")[1],
        "tight": store.create("tight", ["read"], rate_limit="2/minute")[1],
    }


@pytest.fixture(scope="session")
def scored(spark, base_settings: Settings, tmp_path_factory) -> Scored:
    from spark_jobs.features_backfill import backfill_features
    from tickcast.catalog import featurestore
    from tickcast.catalog.tables import ensure_tables
    from tickcast.core.predictions import frame_to_arrow
    from tickcast.models.untrained import quick_bundles, register_bundles
    from tickcast.scoring.models import ModelLoader
    from tickcast.scoring.score import score
    from tickcast.scoring.sources import latest_sequences

    root = tmp_path_factory.mktemp("scored")
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
