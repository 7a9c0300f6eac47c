"""Backfill: bar files into Delta bars_1d / bars_1m by MERGE, on real Spark and Delta."""

from __future__ import annotations

import csv
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from typer.testing import CliRunner

from spark_jobs.backfill import BackfillError, backfill_bars, backfill_file, spark_bars
from tickcast.catalog import tables
from tickcast.catalog.tables import table_defs
from tickcast.cli import app
from tickcast.feeds.barfiles import parse_bar_file

DATA = Path(__file__).resolve().parent / "data"
UPDATED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def expected_rows(file_name: str, symbol: str, interval: timedelta, date_col: str, parse) -> list[tuple]:
    """The bars table rows a file should give, computed with the csv module only."""
    with (DATA / file_name).open() as fh:
        rows = []
        for r in csv.DictReader(fh):
            start = parse(r[date_col])
            rows.append((
                symbol, start, start + interval, float(r["Open"]), float(r["High"]),
                float(r["Low"]), float(r["Close"]), float(r["Volume"]), None, start,
                start + interval - US, UPDATED,
            ))
    return rows


def daily_rows(symbol: str = "AAPL") -> list[tuple]:
    return expected_rows(
        "daily_sample.csv", symbol, timedelta(days=1), "Date",
        lambda d: datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=UTC),
    )


def minute_rows(symbol: str = "AAPL") -> list[tuple]:
    return expected_rows(
        "intraday_1m_sample.csv", symbol, timedelta(minutes=1), "Datetime",
        lambda d: datetime.fromisoformat(d).astimezone(UTC),
    )


def table_df(spark, rows: list[tuple], table: str):
    return spark.createDataFrame(rows, schema=table_defs()[table].schema())


def read_table(spark, settings, table: str):
    return spark.read.format("delta").load(tables.table_path(settings, table)).orderBy("symbol", "window_start")


def test_spark_bars_pure_conversion(spark) -> None:
    bars = parse_bar_file(DATA / "daily_sample.csv").bars
    actual = spark_bars(spark, bars, symbol="AAPL", interval="1d", updated_at=UPDATED)
    assert_df_equality(actual, table_df(spark, daily_rows(), "bars_1d"))

    bars_1m = parse_bar_file(DATA / "intraday_1m_sample.csv").bars
    actual_1m = spark_bars(spark, bars_1m, symbol="AAPL", interval="1m", updated_at=UPDATED)
    assert_df_equality(actual_1m, table_df(spark, minute_rows(), "bars_1m"))


@pytest.fixture(scope="module")
def daily_loaded(spark, base_settings, empty_tables, copy_tables, tmp_path_factory):
    """Every table created, then daily_sample.csv backfilled once as AAPL: (settings, result).

    Read-only; tests that load more work on a copy of its tables (``copy_tables``)."""
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("daily-loaded") / "home"})
    copy_tables(empty_tables, settings)
    return settings, backfill_file(settings, DATA / "daily_sample.csv", symbol="aapl", spark=spark)


@pytest.mark.slow  # Spark MERGEs into Delta, through the quality gate
def test_backfill_daily_twice_leaves_one_copy(spark, settings, daily_loaded, copy_tables) -> None:
    loaded, first = daily_loaded
    assert (first.table, first.symbol, first.bars, first.inserted, first.updated) == (
        "bars_1d", "AAPL", 30, 30, 0,
    )
    expected = table_df(spark, daily_rows(), "bars_1d").drop("updated_at")
    assert_df_equality(
        read_table(spark, loaded, "bars_1d").drop("updated_at"), expected, ignore_nullable=True
    )

    settings = copy_tables(loaded, settings)
    second = backfill_file(settings, DATA / "daily_sample.csv", symbol="AAPL", spark=spark)
    assert (second.inserted, second.updated) == (0, 30)
    after = read_table(spark, settings, "bars_1d")
    assert after.count() == 30
    assert_df_equality(after.drop("updated_at"), expected, ignore_nullable=True)
    assert after.filter("updated_at IS NULL").count() == 0
    # nothing went to the other bars table
    assert spark.read.format("delta").load(tables.table_path(settings, "bars_1m")).count() == 0


@pytest.mark.slow  # Spark MERGE
def test_backfill_updates_corrected_bars_and_adds_new_ones(spark, settings, daily_loaded, copy_tables,
                                                           tmp_path) -> None:
    settings = copy_tables(daily_loaded[0], settings)
    corrected = tmp_path / "corrected.csv"
    corrected.write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,191.70,195.00,190.15,194.00,193.00,90000000\n"
        "2024-02-14,181.00,182.00,180.00,181.50,181.00,40000000\n"
    )
    result = backfill_file(settings, corrected, symbol="AAPL", spark=spark)
    assert (result.inserted, result.updated) == (1, 1)

    aapl = read_table(spark, settings, "bars_1d")
    assert aapl.count() == 31
    jan2 = aapl.filter("window_start = TIMESTAMP'2024-01-02 00:00:00'").first()
    assert (jan2["high"], jan2["close"], jan2["volume"]) == (195.0, 194.0, 90_000_000.0)


@pytest.mark.slow  # Spark MERGE
def test_backfill_one_minute_file_goes_to_bars_1m(spark, tables_home) -> None:
    settings = tables_home
    result = backfill_file(settings, DATA / "intraday_1m_sample.csv", symbol="AAPL", spark=spark)
    assert (result.table, result.interval, result.inserted) == ("bars_1m", "1m", 30)
    expected = table_df(spark, minute_rows(), "bars_1m").drop("updated_at")
    assert_df_equality(
        read_table(spark, settings, "bars_1m").drop("updated_at"), expected, ignore_nullable=True
    )
    assert spark.read.format("delta").load(tables.table_path(settings, "bars_1d")).count() == 0


@pytest.mark.slow  # concurrent Spark MERGEs
def test_concurrent_backfills_into_one_table_all_land(spark, tables_home) -> None:
    """Two writers MERGE into bars_1d at once (as the streaming job does); conflicts are retried."""
    # Every table exists first (``tables_home``), as `tickcast setup` leaves them: this is about
    # concurrent MERGEs, not about two jobs creating the quality tables at the same instant.
    settings = tables_home
    bar_file = parse_bar_file(DATA / "daily_sample.csv")
    results, errors = {}, []

    def load(symbol: str) -> None:
        try:
            results[symbol] = backfill_bars(spark, settings, bar_file, symbol=symbol)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(sym,)) for sym in ("AAA", "BBB")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {sym: r.inserted for sym, r in results.items()} == {"AAA": 30, "BBB": 30}
    table = read_table(spark, settings, "bars_1d")
    assert table.count() == 60
    expected = table_df(spark, daily_rows("AAA") + daily_rows("BBB"), "bars_1d").drop("updated_at")
    assert_df_equality(table.drop("updated_at"), expected, ignore_nullable=True)


def test_other_intervals_are_refused(settings) -> None:
    with pytest.raises(BackfillError, match="this file has 5m bars"):
        backfill_file(settings, DATA / "intraday_5m_naive.csv", symbol="X")


def test_backfill_command_bad_inputs_are_one_clear_line() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["backfill", str(DATA / "intraday_5m_naive.csv"), "--symbol", "X"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backfill loads daily (1d) bars")

    result = runner.invoke(app, ["backfill", str(DATA / "bad_missing_close.csv"), "--symbol", "X"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {DATA / 'bad_missing_close.csv'}: missing required column(s): Close "
        "(found: Date, Open, High, Low, Adj Close, Volume)"
    ]

    result = runner.invoke(app, ["backfill", str(DATA / "nope.csv"), "--symbol", "X"])
    assert result.exit_code == 1
    assert "no such file" in result.stderr
