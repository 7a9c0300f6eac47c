"""Corporate actions: the CSV, the back-adjustment of bars_1d/bars_1m as one Delta version per
table, time travel to the unadjusted history, idempotence, crash recovery, features, the CLI."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from typer.testing import CliRunner

import spark_jobs.corporate_actions as CA
from spark_jobs.corporate_actions import apply_corporate_actions
from spark_jobs.features_backfill import backfill_features
from tickcast.catalog import tables
from tickcast.catalog.tables import delta_rows, ensure_tables, table_defs
from tickcast.cli import app
from tickcast.core.featureset import feature_names
from tickcast.corporate.actions import (
    AppliedAction,
    CorporateAction,
    CorporateActionsError,
    adjustment_segments,
    dividend_factor,
    parse_corporate_actions,
)
from tickcast.features.compute import compute_features

DATA = Path(__file__).parent / "data"
SPLIT_FILE = DATA / "corporate_actions_split.csv"
DAY, MINUTE = timedelta(days=1), timedelta(minutes=1)
START = datetime(2024, 1, 1, tzinfo=UTC)
EX = datetime(2024, 2, 5, tzinfo=UTC)  # AAA's 2:1 split, bar 35 of 70
DAYS = 70
MINUTES = 20  # minute bars from 10 minutes before the ex-date's 00:00 UTC
WRITTEN_AT = datetime(2024, 6, 1, tzinfo=UTC)
PRICE_COLUMNS = ["symbol", "window_start", "open", "high", "low", "close", "volume"]
# Tests that write Delta tables with Spark and apply actions are marked slow (left out of
# `pytest -m "not slow"`); those of the file format and the factors are not.
RETURN_COLUMNS = ["return_1d", "return_5d", "return_20d", "return_60d"]


def bars(symbol, starts, closes, volumes, length, *, ex=None, price_scale=1.0, volume_scale=1.0):
    """Rows of a bars table; bars starting before ``ex`` are scaled (the raw, pre-split side).

    open/high/low are fixed multiples of the close, so scaling by powers of two is exact.
    """
    rows = []
    for start, close, volume in zip(starts, closes, volumes, strict=True):
        before = ex is not None and start < ex
        c = float(close) * (price_scale if before else 1.0)
        v = float(volume) * (volume_scale if before else 1.0)
        rows.append((symbol, start, start + length, c * 0.995, c * 1.01, c * 0.985, c, v, 4,
                     start, start + length - timedelta(microseconds=1), WRITTEN_AT))
    return rows


def table_df(spark, rows, table):
    return spark.createDataFrame(rows, table_defs()[table].schema())


def write_bars(spark, settings, rows, table):
    ensure_tables(spark, settings, [table])
    table_df(spark, rows, table).write.format("delta").mode("append").save(tables.table_path(settings, table))


def read(spark, settings, table, **options):
    reader = spark.read.format("delta")
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load(tables.table_path(settings, table))


def version(settings, table) -> int:
    return DeltaTable(tables.table_path(settings, table)).version()


def ordered(df):
    return df.orderBy("symbol", "window_start")


def stored_features(settings, symbol, interval) -> pd.DataFrame:
    rows = delta_rows(settings, "features").to_pandas()
    rows = rows[(rows.symbol == symbol) & (rows.interval == interval)]
    return rows.sort_values("window_start").reset_index(drop=True)


def underlying_returns(closes: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(closes), np.nan)
    out[n:] = closes[n:] / closes[:-n] - 1
    return out


class History:
    """AAA's economic (split-free) series, and what a feed stores: twice the price and half
    the volume before the 2:1 split. ZZZ has no action."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.days = [START + i * DAY for i in range(DAYS)]
        self.minutes = [EX - 10 * MINUTE + i * MINUTE for i in range(MINUTES)]
        self.closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, DAYS)))
        self.volumes = rng.integers(500, 4500, DAYS) * 2.0
        self.minute_closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, MINUTES)))
        self.minute_volumes = rng.integers(10, 90, MINUTES) * 2.0
        self.other = bars("ZZZ", self.days, 50 + rng.random(DAYS), np.full(DAYS, 1000.0), DAY)

    def daily(self, *, raw: bool) -> list[tuple]:
        scale = {"ex": EX, "price_scale": 2.0, "volume_scale": 0.5} if raw else {}
        return bars("AAA", self.days, self.closes, self.volumes, DAY, **scale) + self.other

    def minute(self, *, raw: bool) -> list[tuple]:
        scale = {"ex": EX, "price_scale": 2.0, "volume_scale": 0.5} if raw else {}
        return bars("AAA", self.minutes, self.minute_closes, self.minute_volumes, MINUTE, **scale)

    def store(self, spark, settings) -> None:
        write_bars(spark, settings, self.daily(raw=True), "bars_1d")
        write_bars(spark, settings, self.minute(raw=True), "bars_1m")


@pytest.fixture(scope="module")
def history() -> History:
    return History()


@pytest.fixture(scope="module")
def raw_home(spark, base_settings, history, empty_tables, copy_tables, tmp_path_factory):
    """Every table (as `tickcast setup` leaves them) and AAA's raw history stored: bars_1d
    and bars_1m at version 1, no features yet. Read-only: tests start from copies of it."""
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("ca-raw") / "home"})
    copy_tables(empty_tables, settings)
    history.store(spark, settings)
    return settings


@pytest.fixture(scope="module")
def split_applied(spark, raw_home, copy_tables, tmp_path_factory):
    """A home with AAA's raw history and its features, then the split file applied once.

    Read-only for the tests; a test that changes things works on a copy (``copy_home``)."""
    settings = copy_tables(raw_home, raw_home.model_copy(update={"home": tmp_path_factory.mktemp("ca-split") / "home"}))
    backfill_features(spark, settings)
    before = {
        "versions": {t: version(settings, t) for t in ("bars_1d", "bars_1m", "features")},
        "features_1d": stored_features(settings, "AAA", "1d"),
        "zzz_computed_at": stored_features(settings, "ZZZ", "1d").computed_at,
    }
    result = apply_corporate_actions(spark, settings, SPLIT_FILE)
    return settings, result, before


def copy_home(settings, tmp_path):
    home = tmp_path / "copied-home"
    shutil.copytree(settings.home_dir, home)
    return settings.model_copy(update={"home": home})


# -- the file -----------------------------------------------------------------------------


def test_a_good_file_parses_in_any_column_order_with_comments_and_ratio_text() -> None:
    actions = parse_corporate_actions(DATA / "corporate_actions_mixed.csv")
    assert [(a.symbol, a.ex_date, a.action, a.value, a.line) for a in actions] == [
        ("BBB", date(2024, 1, 11), "dividend", 1.0, 3),
        ("BBB", date(2024, 1, 21), "split", 0.1, 5),
        ("CCC", date(2024, 1, 15), "split", 3.0, 6),
    ]
    [split] = parse_corporate_actions(SPLIT_FILE)
    assert split == CorporateAction("AAA", date(2024, 2, 5), "split", 2.0)
    # The id is the action's, however its value is spelled.
    assert split.action_id == CorporateAction("AAA", date(2024, 2, 5), "split", 2.0, line=9).action_id
    assert split.action_id != CorporateAction("AAA", date(2024, 2, 5), "split", 3.0).action_id
    assert split.describe() == "AAA 2:1 split, ex-date 2024-02-05"
    assert actions[1].describe() == "BBB 1:10 split, ex-date 2024-01-21"


def test_a_bad_file_names_every_bad_line_and_nothing_is_parsed() -> None:
    with pytest.raises(CorporateActionsError) as caught:
        parse_corporate_actions(DATA / "corporate_actions_bad.csv")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(3, 12)]
    expected = [
        "symbol 'BAD/SYM' does not match", "ex_date '2024-02-30' is not a valid date",
        "ex_date '02/05/2024' is not a date like 2024-03-01", "dividend '-1' is not a positive cash amount",
        "split ratio '0' is not a positive number", "action 'merger' is unknown (expected split or dividend)",
        "split ratio '2:0' needs two positive numbers", "3 field(s), expected 4", "repeats line 2",
    ]
    for problem, text in zip(problems, expected, strict=True):
        assert text in problem, problem
    assert "nothing was applied" in str(caught.value)


@pytest.mark.parametrize(("content", "problem"), [
    ("", "line 1: empty file; expected the header symbol,ex_date,action,value"),
    ("ticker,date,type,amount\nAAA,2024-01-02,split,2\n", "line 1: the header must name the columns"),
    ("symbol,ex_date,action,value\n", "no actions below the header"),
])
def test_a_file_without_header_or_actions_is_refused(tmp_path, content, problem) -> None:
    path = tmp_path / "actions.csv"
    path.write_text(content)
    with pytest.raises(CorporateActionsError) as caught:
        parse_corporate_actions(path)
    assert caught.value.problems[0].startswith(problem)


def test_factors_compose_per_bar_over_the_actions_after_it() -> None:
    early = CorporateAction("BBB", date(2024, 1, 11), "dividend", 1.0)
    late = CorporateAction("BBB", date(2024, 1, 21), "split", 0.1)
    other = CorporateAction("AAA", date(2024, 2, 5), "split", 2.0)
    segments = adjustment_segments([
        AppliedAction(late, 10.0, 0.1), AppliedAction(early, 0.98, 1.0), AppliedAction(other, 0.5, 2.0),
    ])
    assert [(s.symbol, s.valid_from, s.valid_to, s.price_factor, s.volume_factor) for s in segments] == [
        ("AAA", None, EX, 0.5, 2.0),
        ("BBB", None, datetime(2024, 1, 11, tzinfo=UTC), pytest.approx(9.8), pytest.approx(0.1)),
        ("BBB", datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 21, tzinfo=UTC), 10.0, 0.1),
    ]
    assert dividend_factor(early, 50.0) == pytest.approx(0.98)
    assert "not below the close 1" in dividend_factor(early, 1.0)


# -- applying a 2:1 split ------------------------------------------------------------------


@pytest.mark.slow
def test_before_the_split_is_applied_the_return_across_it_is_minus_half(split_applied, history) -> None:
    _, _, before = split_applied
    feats = before["features_1d"]
    at_ex = feats.loc[feats.window_start == pd.Timestamp(EX), "return_1d"].item()
    economic = history.closes[35] / history.closes[34] - 1
    assert at_ex == pytest.approx((1 + economic) / 2 - 1, abs=1e-12)
    assert at_ex < -0.45


@pytest.mark.slow
def test_the_split_halves_prices_and_doubles_volumes_before_the_ex_date_only(spark, split_applied, history) -> None:
    settings, result, before = split_applied
    [applied] = result.applied
    assert (applied.action.symbol, applied.price_factor, applied.volume_factor) == ("AAA", 0.5, 2.0)
    assert result.rows_adjusted == {"bars_1d": 35, "bars_1m": 10}
    assert (result.skipped, result.without_history, result.resumed) == ((), (), False)

    for table, expected in (("bars_1d", history.daily(raw=False)), ("bars_1m", history.minute(raw=False))):
        assert_df_equality(
            ordered(read(spark, settings, table)).select(PRICE_COLUMNS),
            ordered(table_df(spark, expected, table)).select(PRICE_COLUMNS),
            ignore_nullable=True,
        )


@pytest.mark.slow
def test_one_new_version_per_table_and_the_old_one_is_readable_by_time_travel(spark, split_applied, history) -> None:
    settings, result, before = split_applied
    for table, raw in (("bars_1d", history.daily(raw=True)), ("bars_1m", history.minute(raw=True))):
        old = before["versions"][table]
        assert result.versions[table] == (old, old + 1)
        assert version(settings, table) == old + 1
        assert_df_equality(
            ordered(read(spark, settings, table, versionAsOf=old)),
            ordered(table_df(spark, raw, table)),
            ignore_nullable=True,
        )
    commit = DeltaTable(tables.table_path(settings, "bars_1d")).history(1)[0]
    assert commit["operation"] == "MERGE"
    assert "AAA 2:1 split, ex-date 2024-02-05" in commit["userMetadata"]


@pytest.mark.slow
def test_returns_across_the_split_are_continuous_after_it_is_applied(split_applied, history) -> None:
    settings, result, _ = split_applied
    daily = stored_features(settings, "AAA", "1d")
    assert len(daily) == DAYS
    at_ex = daily.loc[daily.window_start == pd.Timestamp(EX), "return_1d"].item()
    assert at_ex == pytest.approx(history.closes[35] / history.closes[34] - 1, abs=1e-12)
    # Every return horizon equals the economic series' return: no jump anywhere.
    for column in RETURN_COLUMNS:
        n = int(column.removeprefix("return_").removesuffix("d"))
        np.testing.assert_allclose(
            daily[column].to_numpy(float), underlying_returns(history.closes, n), atol=1e-12, equal_nan=True,
            err_msg=column,
        )
    assert daily["return_60d"].notna().sum() == DAYS - 60  # the 60-bar returns span the split

    minute = stored_features(settings, "AAA", "1m")
    np.testing.assert_allclose(
        minute["return_1d"].to_numpy(float), underlying_returns(history.minute_closes, 1), atol=1e-12,
        equal_nan=True,
    )
    assert [(r.interval, r.symbols, r.rows) for r in result.features] == [("1d", 1, DAYS), ("1m", 1, MINUTES)]
    assert result.features_rows == DAYS + MINUTES


@pytest.mark.slow
def test_the_recomputed_features_are_those_of_the_adjusted_bars(split_applied) -> None:
    settings, _, before = split_applied
    for interval in ("1d", "1m"):
        adjusted = delta_rows(settings, f"bars_{interval}").to_pandas()
        expected = compute_features(adjusted[adjusted.symbol == "AAA"], interval)
        stored = stored_features(settings, "AAA", interval)
        assert list(stored.window_start) == list(expected.window_start)
        for name in feature_names(interval):
            np.testing.assert_allclose(
                stored[name].to_numpy(float), expected[name].to_numpy(float), rtol=1e-12, atol=1e-12,
                equal_nan=True, err_msg=f"{interval} {name}",
            )
    # ZZZ had no action: its features were not rewritten.
    assert stored_features(settings, "ZZZ", "1d").computed_at.equals(before["zzz_computed_at"])


@pytest.mark.slow
def test_the_applied_split_is_recorded_with_its_factor(split_applied) -> None:
    settings, result, _ = split_applied
    [row] = delta_rows(settings, "corporate_actions").to_pylist()
    assert {k: row[k] for k in ("action_id", "symbol", "ex_date", "action", "split_ratio", "cash_amount",
                                 "adjustment_factor", "source_file")} == {
        "action_id": result.applied[0].action.action_id, "symbol": "AAA", "ex_date": date(2024, 2, 5),
        "action": "split", "split_ratio": 2.0, "cash_amount": None, "adjustment_factor": 0.5,
        "source_file": str(SPLIT_FILE.resolve()),
    }


@pytest.mark.slow
def test_applying_the_same_file_again_changes_nothing(spark, split_applied, tmp_path) -> None:
    settings = copy_home(split_applied[0], tmp_path)
    tables = ("bars_1d", "bars_1m", "features", "corporate_actions")
    versions = {t: version(settings, t) for t in tables}

    again = apply_corporate_actions(spark, settings, SPLIT_FILE)

    assert again.applied == () and again.tables == () and again.features == ()
    assert [a.describe() for a in again.skipped] == ["AAA 2:1 split, ex-date 2024-02-05"]
    assert {t: version(settings, t) for t in tables} == versions
    assert "nothing to adjust: no table was changed" in again.summary_lines()


@pytest.mark.slow
def test_a_dividend_before_an_applied_split_uses_the_close_as_traded(spark, split_applied, history, tmp_path) -> None:
    settings = copy_home(split_applied[0], tmp_path)
    minute_version = version(settings, "bars_1m")
    adjusted = read(spark, settings, "bars_1d").toPandas()

    result = apply_corporate_actions(spark, settings, DATA / "corporate_actions_dividend_before_split.csv")

    # The bar before the ex-date (Jan 19, bar 18) traded at twice its split-adjusted close.
    [applied] = result.applied
    as_traded = 2 * history.closes[18]
    assert applied.reference_close == pytest.approx(as_traded, rel=1e-12)
    factor = 1 - 0.5 / as_traded
    assert applied.price_factor == pytest.approx(factor, rel=1e-12)
    assert applied.volume_factor == 1.0

    now = read(spark, settings, "bars_1d").toPandas().merge(
        adjusted, on=["symbol", "window_start"], suffixes=("", "_before"))
    before_ex = (now.symbol == "AAA") & (now.window_start < pd.Timestamp("2024-01-20"))
    assert before_ex.sum() == 19
    for column in ("open", "high", "low", "close"):
        np.testing.assert_allclose(now.loc[before_ex, column], now.loc[before_ex, f"{column}_before"] * factor, rtol=1e-14)
        assert (now.loc[~before_ex, column] == now.loc[~before_ex, f"{column}_before"]).all()
    assert (now.volume == now.volume_before).all()
    # No minute bar is older than Jan 20: bars_1m has no new version, its features are left alone.
    assert result.rows_adjusted == {"bars_1d": 19, "bars_1m": 0}
    assert version(settings, "bars_1m") == minute_version
    assert [r.interval for r in result.features] == ["1d"]
    recorded = {r["action"]: r["adjustment_factor"] for r in delta_rows(settings, "corporate_actions").to_pylist()}
    assert recorded == {"split": 0.5, "dividend": pytest.approx(factor, rel=1e-12)}


# -- several actions in one file ---------------------------------------------------------------


@pytest.mark.slow
def test_a_dividend_and_a_reverse_split_compose_in_one_version(spark, tables_home) -> None:
    settings = tables_home
    closes = [50.0 + i for i in range(30)]
    closes = [c * (10 if i >= 20 else 1) for i, c in enumerate(closes)]  # 1:10 on Jan 21 (bar 20)
    days = [START + i * DAY for i in range(30)]
    raw = bars("BBB", days, closes, [1000.0] * 30, DAY)
    write_bars(spark, settings, raw, "bars_1d")
    versions = {t: version(settings, t) for t in ("bars_1d", "bars_1m")}

    result = apply_corporate_actions(spark, settings, DATA / "corporate_actions_mixed.csv")

    dividend = 1 - 1.0 / closes[9]  # the close of Jan 10, the day before the dividend's ex-date
    assert [(a.action.action, a.price_factor, a.volume_factor) for a in result.applied] == [
        ("dividend", pytest.approx(dividend, rel=1e-14), 1.0), ("split", 10.0, 0.1),
    ]
    assert [a.symbol for a in result.without_history] == ["CCC"]
    assert result.rows_adjusted == {"bars_1d": 20, "bars_1m": 0}
    assert result.versions == {"bars_1d": (versions["bars_1d"], versions["bars_1d"] + 1)}
    assert version(settings, "bars_1m") == versions["bars_1m"]

    price = [dividend * 10] * 10 + [10.0] * 10 + [1.0] * 10
    volume = [0.1] * 20 + [1.0] * 10
    expected = [
        (*row[:3], *(p * price[i] for p in row[3:7]), row[7] * volume[i], *row[8:])
        for i, row in enumerate(raw)
    ]
    got = read(spark, settings, "bars_1d").toPandas().sort_values("window_start")
    want = table_df(spark, expected, "bars_1d").toPandas().sort_values("window_start")
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-14, err_msg=column)
    # Continuous at the split: 69 x 10 -> 700, where the raw series jumped from 69 to 700.
    assert got.close.iloc[20] / got.close.iloc[19] - 1 == pytest.approx(70 * 10 / (69 * 10) - 1, rel=1e-12)
    # CCC is not recorded: applying after loading its history will adjust it.
    assert sorted(r["symbol"] for r in delta_rows(settings, "corporate_actions").to_pylist()) == ["BBB", "BBB"]


@pytest.mark.slow
def test_a_dividend_not_below_the_close_refuses_the_whole_file(spark, tables_home, tmp_path) -> None:
    settings = tables_home
    days = [START + i * DAY for i in range(5)]
    write_bars(spark, settings, bars("BBB", days, [2.0] * 5, [1000.0] * 5, DAY), "bars_1d")
    path = tmp_path / "actions.csv"
    path.write_text("symbol,ex_date,action,value\nBBB,2024-01-03,split,2\nBBB,2024-01-04,dividend,2.5\n")
    versions = version(settings, "bars_1d")
    with pytest.raises(CorporateActionsError, match=r"line 3: BBB dividend 2.5 per share, ex-date 2024-01-04: "
                                                    r"dividend 2.5 is not below the close 2"):
        apply_corporate_actions(spark, settings, path)
    assert version(settings, "bars_1d") == versions
    assert len(delta_rows(settings, "corporate_actions")) == 0


# -- an apply interrupted between its commits -------------------------------------------------


@pytest.mark.slow
def test_an_interrupted_apply_is_finished_by_the_next_without_adjusting_twice(
    spark, settings, history, raw_home, copy_tables, monkeypatch
) -> None:
    settings = copy_tables(raw_home, settings)
    pending = settings.checkpoint_dir / "corporate-actions" / "pending.json"
    real_adjust = CA._adjust_table

    # Dies before its first commit: the saved plan is dropped and the file planned afresh.
    def die_at_once(spark, settings, table, plan):
        raise RuntimeError("killed")

    monkeypatch.setattr(CA, "_adjust_table", die_at_once)
    with pytest.raises(RuntimeError):
        apply_corporate_actions(spark, settings, SPLIT_FILE)
    first_batch = json.loads(pending.read_text())["batch_id"]

    # Dies after bars_1d committed, before bars_1m.
    def die_before_minutes(spark, settings, table, plan):
        if table == "bars_1m":
            raise RuntimeError("killed")
        return real_adjust(spark, settings, table, plan)

    monkeypatch.setattr(CA, "_adjust_table", die_before_minutes)
    with pytest.raises(RuntimeError):
        apply_corporate_actions(spark, settings, SPLIT_FILE)
    assert json.loads(pending.read_text())["batch_id"] != first_batch
    assert len(delta_rows(settings, "corporate_actions")) == 0
    half_done = version(settings, "bars_1d")

    monkeypatch.setattr(CA, "_adjust_table", real_adjust)
    result = apply_corporate_actions(spark, settings, SPLIT_FILE)

    assert result.resumed and result.skipped == ()
    assert [a.describe() for a in result.applied] == ["AAA 2:1 split, ex-date 2024-02-05: prices x 0.5, volumes x 2"]
    # bars_1d's MERGE skipped itself (its txn was committed); bars_1m's ran.
    assert [(t.table, t.rows, t.version_after) for t in result.tables] == [
        ("bars_1d", 0, half_done), ("bars_1m", 10, version(settings, "bars_1m")),
    ]
    assert version(settings, "bars_1d") == half_done
    assert not pending.exists()
    for table, expected in (("bars_1d", history.daily(raw=False)), ("bars_1m", history.minute(raw=False))):
        assert_df_equality(
            ordered(read(spark, settings, table)).select(PRICE_COLUMNS),
            ordered(table_df(spark, expected, table)).select(PRICE_COLUMNS),
            ignore_nullable=True,
        )
    assert len(delta_rows(settings, "corporate_actions")) == 1
    assert len(stored_features(settings, "AAA", "1m")) == MINUTES


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_apply_list_and_a_bad_file(spark, settings, history) -> None:
    env = {"TICKCAST_HOME": str(settings.home)}
    runner = CliRunner()

    listed = runner.invoke(app, ["corporate-actions", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("No corporate actions applied yet")

    write_bars(spark, settings, history.daily(raw=True), "bars_1d")
    applied = runner.invoke(app, ["corporate-actions", "apply", str(SPLIT_FILE)], env=env)
    assert applied.exit_code == 0, applied.output
    lines = applied.stdout.splitlines()
    assert "applied: AAA 2:1 split, ex-date 2024-02-05: prices x 0.5, volumes x 2" in lines
    assert ("bars_1d: 35 bar(s) adjusted, version 1 -> 2 (the unadjusted history stays readable with "
            "versionAsOf 1)") in lines
    assert any(line.startswith("features 1d: 70 row(s) for 1 symbol(s)") for line in lines), lines
    assert spark.range(1).count() == 1  # the command left the caller's session running

    listed = runner.invoke(app, ["corporate-actions", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["symbol", "ex_date", "action", "value", "factor", "applied_at", "(UTC)", "file"]
    assert row.split()[:5] == ["AAA", "2024-02-05", "split", "2", "0.5"]
    assert row.split()[-1] == SPLIT_FILE.name

    again = runner.invoke(app, ["corporate-actions", "apply", str(SPLIT_FILE)], env=env)
    assert again.exit_code == 0, again.output
    assert "skipped (already applied): AAA 2:1 split, ex-date 2024-02-05" in again.stdout.splitlines()

    bad = runner.invoke(app, ["corporate-actions", "apply", str(DATA / "corporate_actions_bad.csv")], env=env)
    assert bad.exit_code == 1
    assert bad.stderr.startswith(f"error: {DATA / 'corporate_actions_bad.csv'}: 9 problem(s), nothing was applied")
    assert "  line 8: action 'merger' is unknown (expected split or dividend)" in bad.stderr.splitlines()

    missing = runner.invoke(app, ["corporate-actions", "apply", str(DATA / "nope.csv")], env=env)
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    assert len(delta_rows(settings, "corporate_actions")) == 1


def test_cli_help_documents_the_file_format() -> None:
    result = CliRunner().invoke(app, ["corporate-actions", "apply", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("symbol,ex_date,action,value", "1:10", "versionAsOf", "Ticks stay raw"):
        assert text in result.stdout
