"""The read side: Delta tables written by Spark (delta-spark), read by delta-rs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.serving.market_data import DAY0, bar_rows, make_prediction, write_bars
from tickcast.catalog import tables
from tickcast.catalog.market import BAR_COLUMNS, Bar, MarketStore, SymbolStatus
from tickcast.catalog.online import OnlineStore
from tickcast.catalog.tables import ensure_tables
from tickcast.core.settings import Settings

DAY = timedelta(days=1)


def _bars(rows: list[tuple]) -> list[Bar]:
    return [Bar(**dict(zip(BAR_COLUMNS, r, strict=True))) for r in rows]


def test_missing_tables_read_as_empty(settings: Settings) -> None:
    store = MarketStore(settings)
    assert store.bars.bars("AAPL", "1d") == []
    assert store.bars.bars("AAPL", "1m", limit=10) == []
    assert store.symbols() == []
    assert not store.is_known("AAPL")
    assert {c.status for c in store.health().values()} == {"empty"}
    # Reading created nothing: a reader never makes the writer's directories.
    assert not settings.home_dir.exists()


@pytest.mark.slow  # five Spark writes to Delta and a checkpoint
def test_bars_written_by_spark_read_by_delta_rs(spark, settings: Settings) -> None:
    ensure_tables(spark, settings, ["bars_1d", "bars_1m"])
    aapl = bar_rows("AAPL", DAY0, DAY, 8, 100.0)
    msft = bar_rows("MSFT", DAY0, DAY, 3, 300.0)
    write_bars(spark, settings, "bars_1d", aapl[::-1] + msft)
    # A long cache: the symbol list asked for below comes from it, not from the table.
    store = MarketStore(settings.model_copy(update={"store_symbols_cache_seconds": 3600}))

    assert store.bars.bars("AAPL", "1d", limit=3) == _bars(aapl[-3:])
    assert store.bars.bars("AAPL", "1d", limit=5000) == _bars(aapl)
    assert store.bars.bars("MSFT", "1d") == _bars(msft)
    assert store.bars.bars("AAPL", "1m") == []
    assert store.bars.bars_table("AAPL", "1d", 2).column_names == list(BAR_COLUMNS)
    assert [b.window_start.tzinfo is not None for b in store.bars.bars("AAPL")] == [True] * 8

    OnlineStore(settings.online_store_path).upsert([make_prediction("MSFT", msft[-1][2], 300.0)])
    assert store.symbols() == [SymbolStatus("AAPL", False), SymbolStatus("MSFT", True)]

    # The streaming job keeps committing: the open table must follow through a checkpoint.
    table_path = tables.table_path(settings, "bars_1d")
    spark.sql(f"ALTER TABLE delta.`{table_path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2')")
    reader = store.bars.readers["1d"]
    handle = reader._table
    later = bar_rows("AAPL", DAY0 + 8 * DAY, DAY, 2, 104.0)
    write_bars(spark, settings, "bars_1d", later[:1])
    write_bars(spark, settings, "bars_1d", later[1:] + bar_rows("IBM", DAY0, DAY, 4, 150.0))
    # A bar the writer appended again, later and changed: only its newest version counts.
    revised = (*aapl[-1][:6], 999.0, *aapl[-1][7:])
    write_bars(spark, settings, "bars_1d", [revised], written_at=datetime(2024, 3, 1, tzinfo=UTC))
    assert list((tables.delta_dir(settings) / "bars_1d" / "_delta_log").glob("*.checkpoint*.parquet"))

    assert store.bars.bars("AAPL", "1d", limit=4) == _bars([aapl[-2], revised, *later])
    assert reader._table is handle, "the table handle is refreshed, not reopened"
    assert len(store.bars.bars("IBM")) == 4
    # The symbol list is cached, but a direct question about IBM is answered from the table.
    assert "IBM" not in store.bars.symbols()
    assert store.is_known("IBM")
    fresh = MarketStore(settings.model_copy(update={"store_symbols_cache_seconds": 0}))
    assert fresh.bars.symbols() == {"AAPL", "IBM", "MSFT"}
    health = fresh.health()
    assert health["bars_1d"].status == "ok" and health["bars_1d"].detail == "version 5"
    assert health["bars_1m"].detail == "version 0"
    assert health["online_store"].detail == "1 symbol with a prediction"
