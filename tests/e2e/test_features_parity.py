"""Stream/batch parity: the features the stream computed bar by bar, micro-batch by
micro-batch, equal the batch backfill's over the same bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chispa import assert_approx_df_equality

from tickcast.catalog import tables
from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.catalog.topics import topic_message_count
from tickcast.core.featureset import FEATURE_NAMES
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.platform.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAYS = 300


def _daily_file(directory: Path, symbol: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2022-01-03", periods=DAYS, freq="D")
    close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.012, DAYS))), 4)
    open_ = np.round(close * (1 + rng.normal(0, 0.004, DAYS)), 4)
    frame = pd.DataFrame({
        "Date": dates.strftime("%Y-%m-%d"), "Open": open_,
        "High": np.round(np.maximum(open_, close) * 1.006, 4),
        "Low": np.round(np.minimum(open_, close) * 0.994, 4),
        "Close": close, "Adj Close": close, "Volume": rng.integers(10_000, 90_000, DAYS),
    })
    path = directory / f"{symbol.lower()}.csv"
    frame.to_csv(path, index=False)
    return path


def test_stream_features_equal_the_batch_backfill(e2e, spark, tmp_path):
    settings = e2e.settings
    # Small micro-batches, so each symbol's history arrives over several batches; a lookback
    # span wide enough that the stream sees TRAILING_BARS bars even across the replay's gaps.
    e2e.env["TICKCAST_INGEST_MAX_OFFSETS_PER_TRIGGER"] = "900"
    e2e.env["TICKCAST_FEATURES_LOOKBACK_FACTOR"] = "2000"
    ingest = e2e.ingest()
    # The index arrives after AAA: AAA's market features must be recomputed when it does.
    for symbol, seed in (("AAA", 11), ("MKT", 12), ("BBB", 13)):
        e2e.run_cli("produce", "replay", str(_daily_file(tmp_path, symbol, seed)), "--symbol", symbol)
    produced = topic_message_count(e2e.bootstrap, e2e.topic)
    assert produced == 3 * DAYS * 4

    wait_until(lambda: delta_count(settings, "ticks") >= produced, timeout=900,
               what=f"{produced} ticks stored", on_timeout=ingest.log_tail)

    def all_folded() -> bool:
        # The bars query reads `ticks` behind the ticks query: wait for it to fold every tick.
        bars = [delta_rows(settings, tables.bars(interval), ["trades"]) for interval in INTERVAL_NAMES]
        return all(b is not None and b.column("trades").to_pandas().sum() >= produced for b in bars)

    wait_until(all_folded, timeout=900, what=f"{produced} ticks in the bars", on_timeout=ingest.log_tail)
    ingest.stop()  # finishes the batch in flight (its features too): the stream's features are final
    assert delta_count(settings, "quarantine") == 0

    from deltalake import DeltaTable

    stream_version = DeltaTable(tables.table_path(settings, "features")).version()
    assert delta_count(settings, "features") == delta_count(settings, "bars_1d") + delta_count(settings, "bars_1m")

    e2e.run_cli("features", "backfill", timeout=900)

    keys = ["symbol", "interval", "window_start", "window_end"]
    columns = [*keys, *FEATURE_NAMES, "feature_set_version"]
    path = tables.table_path(settings, "features")
    streamed = spark.read.format("delta").option("versionAsOf", stream_version).load(path).select(*columns)
    batch = spark.read.format("delta").load(path).select(*columns)
    assert streamed.count() == batch.count() == 3 * DAYS * 5  # one daily and four 1-minute bars a day
    # Features the stream computed early (before later bars, or before the index's bars)
    # must have been recomputed: market features are filled for AAA.
    aaa = streamed.where("symbol = 'AAA' AND interval = '1d'").toPandas()
    assert aaa["market_beta"].notna().sum() == DAYS - 60
    assert aaa["return_252d"].notna().sum() == DAYS - 252
    assert_approx_df_equality(
        streamed.orderBy(*keys), batch.orderBy(*keys), precision=1e-9, ignore_nullable=True
    )
