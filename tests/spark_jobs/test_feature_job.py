"""Features in Spark: the applyInPandas wrapper, the stream's trailing-bar selection and
the batch backfill against Delta."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from chispa import assert_approx_df_equality

from spark_jobs import features as FX
from spark_jobs.features_backfill import backfill_features
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_rows, ensure_tables
from tickcast.core.featureset import TRAILING_BARS
from tickcast.features.compute import BAR_COLUMNS, compute_features

BAR_DDL = (
    "symbol string, window_start timestamp, window_end timestamp, open double, high double, "
    "low double, close double, volume double"
)


def random_bars(symbol: str, n: int, seed: int, start: str = "2023-01-02", freq: str = "1D") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    starts = pd.date_range(start, periods=n, freq=freq)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * (1 + rng.normal(0, 0.003, n))
    return pd.DataFrame({
        "symbol": symbol, "window_start": starts, "window_end": starts + pd.Timedelta(freq),
        "open": open_, "high": np.maximum(open_, close) * 1.004, "low": np.minimum(open_, close) * 0.996,
        "close": close, "volume": rng.integers(1_000, 9_000, n).astype(float),
    })


@pytest.fixture(scope="module")
def daily_bars() -> pd.DataFrame:
    return pd.concat(
        [random_bars("MKT", 330, 1), random_bars("AAA", 330, 2), random_bars("BBB", 250, 3),
         random_bars("CCC", 40, 4, start="2023-06-01")],
        ignore_index=True,
    )


def test_spark_rows_equal_the_pandas_implementation(spark, daily_bars):
    index = daily_bars[daily_bars.symbol == "MKT"]
    expected = compute_features(daily_bars, "1d", index)
    got = FX.feature_rows(spark.createDataFrame(daily_bars, BAR_DDL), "1d", index, buckets=3)
    schema = FX.feature_schema()
    assert_approx_df_equality(
        got.orderBy("symbol", "window_start"),
        spark.createDataFrame(expected, schema).orderBy("symbol", "window_start"),
        precision=1e-12,
    )


def test_trailing_bars_keep_the_refreshed_bars_and_the_history_before_them(spark):
    bars = pd.concat([random_bars("AAA", TRAILING_BARS + 50, 5), random_bars("BBB", 30, 6)], ignore_index=True)
    refresh_from = datetime(2023, 1, 2) + timedelta(days=TRAILING_BARS + 40)
    scope = spark.createDataFrame(
        [("AAA", refresh_from), ("BBB", datetime(2023, 1, 2) + timedelta(days=20))],
        "symbol string, refresh_from timestamp",
    )
    picked = FX.trailing_bars(spark.createDataFrame(bars, BAR_DDL), scope, "1d", lookback_factor=4).toPandas()
    aaa = picked[picked.symbol == "AAA"].sort_values("window_start")
    # 10 refreshed bars and exactly TRAILING_BARS before them.
    assert (aaa.window_start >= refresh_from).sum() == 10
    assert (aaa.window_start < refresh_from).sum() == TRAILING_BARS
    assert aaa.window_start.iloc[0] == pd.Timestamp(refresh_from) - pd.Timedelta(days=TRAILING_BARS)
    # A short series is taken whole.
    assert (picked.symbol == "BBB").sum() == 30


def test_trailing_bars_respect_the_lookback_span(spark):
    bars = random_bars("AAA", 100, 7)
    refresh_from = datetime(2023, 1, 2) + timedelta(days=90)
    scope = spark.createDataFrame([("AAA", refresh_from)], "symbol string, refresh_from timestamp")
    # 0.1 x 400 days = 40 days before refresh_from.
    picked = FX.trailing_bars(spark.createDataFrame(bars, BAR_DDL), scope, "1d", lookback_factor=0.1).toPandas()
    assert picked.window_start.min() == pd.Timestamp(refresh_from) - pd.Timedelta(days=40)


def test_refresh_scope_extends_to_every_symbol_when_the_index_changes():
    t0, t1, t2 = datetime(2024, 1, 1), datetime(2024, 1, 2), datetime(2024, 1, 3)
    assert FX.refresh_scope({"AAA": t2}, "MKT", ["AAA", "BBB"]) == {"AAA": t2}
    assert FX.refresh_scope({"AAA": t2, "MKT": t1}, "MKT", ["AAA", "BBB", "MKT"]) == {
        "AAA": t1, "BBB": t1, "MKT": t1,
    }
    assert FX.refresh_scope({"AAA": t0, "MKT": t1}, "MKT", ["AAA", "MKT"])["AAA"] == t0


def _write_bars(spark, settings, frame: pd.DataFrame, table: str = "bars_1d") -> None:
    ensure_tables(spark, settings, [table])
    sdf = spark.createDataFrame(frame, BAR_DDL)
    from pyspark.sql import functions as F

    sdf = (
        sdf.withColumn("trades", F.lit(4).cast("bigint"))
        .withColumn("open_ts", F.col("window_start")).withColumn("close_ts", F.col("window_start"))
        .withColumn("updated_at", F.current_timestamp())
    )
    sdf.write.format("delta").mode("append").save(tables.table_path(settings, table))


@pytest.fixture(scope="module")
def backfilled(spark, base_settings, empty_tables, copy_tables, daily_bars, tmp_path_factory):
    """The daily bars in bars_1d and one full feature backfill over them, with its results.

    Built once for the module (the backfill is the slow part) and read-only: a test that
    backfills again works on a copy of its Delta tables (``copy_tables``)."""
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("backfilled") / "home"})
    copy_tables(empty_tables, settings)
    _write_bars(spark, settings, daily_bars)
    return settings, backfill_features(spark, settings)


@pytest.mark.slow  # feature backfills: Spark jobs over Delta
def test_backfill_writes_full_history_features_and_reruns_converge(spark, settings, daily_bars, backfilled,
                                                                  copy_tables):
    [daily, minute] = backfilled[1]
    assert (daily.rows, daily.symbols) == (len(daily_bars), 4)
    assert minute.rows == 0

    stored = delta_rows(backfilled[0], "features").to_pandas()
    expected = compute_features(daily_bars, "1d", daily_bars[daily_bars.symbol == "MKT"])
    stored = stored.sort_values(["symbol", "window_start"]).reset_index(drop=True)
    assert list(stored.symbol) == list(expected.symbol)
    np.testing.assert_allclose(
        stored["macd_signal"].to_numpy(float), expected["macd_signal"].to_numpy(float), rtol=1e-12, equal_nan=True
    )
    assert stored["return_252d"].notna().sum() == (330 - 252) * 2
    assert set(stored.feature_set_version) == {"v1"}

    # Re-running gives the same rows, not copies.
    settings = copy_tables(backfilled[0], settings)
    backfill_features(spark, settings, intervals=("1d",))
    assert len(delta_rows(settings, "features")) == len(daily_bars)


@pytest.mark.slow  # feature backfills: Spark jobs over Delta
def test_backfill_of_one_symbol_drops_its_stale_rows_only(spark, settings, backfilled, copy_tables):
    settings = copy_tables(backfilled[0], settings)
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, tables.table_path(settings, "bars_1d")).delete(
        "symbol = 'CCC' AND window_start >= timestamp'2023-07-01'"
    )
    [result] = backfill_features(spark, settings, symbols=["CCC"], intervals=("1d",))
    stored = delta_rows(settings, "features").to_pandas()
    assert result.rows == 30  # June 2023
    assert (stored.symbol == "CCC").sum() == 30
    assert (stored.symbol == "AAA").sum() == 330


@pytest.mark.slow  # feature backfills: Spark jobs over Delta
def test_backfill_records_its_index_and_only_a_full_one_changes_it(spark, settings, backfilled, copy_tables):
    from tickcast.catalog import featureindex

    assert featureindex.recorded(backfilled[0], "1d") == "MKT"
    assert featureindex.recorded(backfilled[0], "1m") is None  # no minute bars: nothing computed
    other = copy_tables(backfilled[0], settings).model_copy(update={"market_index_symbol": "AAA"})
    # Some symbols only would mix market features of two indexes: refused, with what to run.
    with pytest.raises(featureindex.MarketIndexMismatch, match="computed against the index MKT, but this "
                       "platform's market index is AAA .* run `tickcast features backfill --interval 1d`"):
        backfill_features(spark, other, symbols=["CCC"], intervals=("1d",))
    assert featureindex.recorded(other, "1d") == "MKT"
    backfill_features(spark, other, intervals=("1d",))  # every symbol: the index changes
    assert featureindex.recorded(other, "1d") == "AAA"
    backfill_features(spark, other, symbols=["CCC"], intervals=("1d",))  # now they agree


def test_the_stream_records_its_index_and_refuses_features_of_another(spark, tables_home):
    from spark_jobs.ingest.job import _claim_market_index
    from tickcast.catalog import featureindex

    _claim_market_index(spark, tables_home)
    assert [featureindex.recorded(tables_home, i) for i in ("1d", "1m")] == ["MKT", "MKT"]
    with pytest.raises(featureindex.MarketIndexMismatch, match="computed against the index MKT"):
        _claim_market_index(spark, tables_home.model_copy(update={"market_index_symbol": "SPX"}))


def test_backfill_rejects_an_unknown_interval(spark, settings):
    with pytest.raises(ValueError, match="unknown interval"):
        backfill_features(spark, settings, intervals=("5m",))


def test_bar_columns_are_what_the_bars_tables_hold():
    from tickcast.catalog.tables import table_defs

    for table in ("bars_1m", "bars_1d"):
        assert set(BAR_COLUMNS) <= set(table_defs()[table].column_names)
