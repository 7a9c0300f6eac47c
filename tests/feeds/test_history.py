"""Batch history: the bar contract, the planted echo, CSV output and the Delta load."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from typer.testing import CliRunner

from spark_jobs.backfill import backfill_frame
from tickcast.catalog import tables
from tickcast.catalog.tables import table_defs
from tickcast.cli import app
from tickcast.features.alt import earnings_window
from tickcast.feeds import FeedError
from tickcast.feeds.alpha import noise_scale
from tickcast.feeds.barfiles import parse_bar_file
from tickcast.feeds.history import COLUMNS, generate_history, generate_market, log_returns
from tickcast.feeds.synthetic import SyntheticMarket

US = timedelta(microseconds=1)


def assert_bar_contract(bars: pd.DataFrame, n_symbols: int, n_bars: int) -> None:
    assert list(bars.columns) == COLUMNS
    assert len(bars) == n_symbols * n_bars
    assert str(bars["window_start"].dtype) == "datetime64[ns, UTC]"
    assert str(bars["window_end"].dtype) == "datetime64[ns, UTC]"
    assert bars["trades"].dtype == np.int64
    prices = bars[["open", "high", "low", "close"]].to_numpy()
    assert bars.notna().all().all()
    assert np.isfinite(prices).all() and (prices > 0).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["volume"] >= 1).all() and (bars["volume"] == np.floor(bars["volume"])).all()
    assert (bars["trades"] >= 1).all()
    assert not bars.duplicated(["symbol", "window_start"]).any()
    for _, rows in bars.groupby("symbol"):
        assert rows["window_start"].is_monotonic_increasing
        # each bar opens at the previous close
        assert np.array_equal(rows["open"].to_numpy()[1:], rows["close"].to_numpy()[:-1])


def test_daily_bars_meet_the_contract() -> None:
    bars = generate_history(6, 30, "1d", seed=1, alpha=0.2)
    assert_bar_contract(bars, 6, 30)
    assert bars["symbol"].unique().tolist() == ["MKT", "S0001", "S0002", "S0003", "S0004", "S0005"]
    starts = bars["window_start"]
    assert (starts.dt.dayofweek < 5).all()
    assert (starts == starts.dt.normalize()).all()
    assert (bars["window_end"] - starts == pd.Timedelta(days=1)).all()
    mkt = starts[bars["symbol"] == "MKT"]
    assert mkt.iloc[0] == pd.Timestamp("2018-01-01", tz="UTC")  # a Monday
    # 30 weekdays are six whole weeks
    assert mkt.iloc[-1] == pd.Timestamp("2018-02-09", tz="UTC")


def test_minute_bars_meet_the_contract() -> None:
    bars = generate_history(3, 500, "1m", seed=2, start="2024-01-06")  # a Saturday
    assert_bar_contract(bars, 3, 500)
    starts = bars["window_start"]
    assert (bars["window_end"] - starts == pd.Timedelta(minutes=1)).all()
    minute_of_day = starts.dt.hour * 60 + starts.dt.minute
    assert minute_of_day.between(14 * 60 + 30, 20 * 60 + 59).all()
    mkt = starts[bars["symbol"] == "MKT"].reset_index(drop=True)
    assert mkt.iloc[0] == pd.Timestamp("2024-01-08 14:30", tz="UTC")  # the next Monday
    assert mkt.iloc[389] == pd.Timestamp("2024-01-08 20:59", tz="UTC")
    assert mkt.iloc[390] == pd.Timestamp("2024-01-09 14:30", tz="UTC")
    assert (mkt.dt.dayofweek < 5).all()


def test_same_seed_same_history_and_alpha_keeps_the_universe() -> None:
    first = generate_history(5, 40, "1d", seed=7)
    pd.testing.assert_frame_equal(first, generate_history(5, 40, "1d", seed=7))
    assert not first["close"].equals(generate_history(5, 40, "1d", seed=8)["close"])

    echoed = generate_history(5, 40, "1d", seed=7, alpha=0.5)
    # the universe the tick stream draws from the same seed
    market = SyntheticMarket(5, seed=7)
    opens = first.groupby("symbol", sort=False)["open"].first().to_numpy()
    assert np.array_equal(opens, market.universe.start_prices)
    assert np.array_equal(echoed.groupby("symbol", sort=False)["open"].first().to_numpy(), opens)
    # same draws: activity, volumes and the bars before the first echo are the same
    for col in ("symbol", "window_start", "window_end", "trades", "volume"):
        assert first[col].equals(echoed[col]), col
    early = first["window_start"] < first["window_start"].min() + pd.Timedelta(days=3)
    assert np.array_equal(first.loc[early, "close"], echoed.loc[early, "close"])
    assert not np.array_equal(first["close"], echoed["close"])


def test_bad_arguments_are_feed_errors() -> None:
    with pytest.raises(FeedError, match="--interval must be one of 1d, 1m"):
        generate_history(3, 10, "5m")
    with pytest.raises(FeedError, match="--alpha must be"):
        generate_history(3, 10, "1d", alpha=1.0)
    with pytest.raises(FeedError, match="--bars must be at least 1"):
        generate_history(3, 0, "1d")
    with pytest.raises(FeedError, match="--symbols must be between"):
        generate_history(0, 10, "1d")
    with pytest.raises(FeedError, match="not a date"):
        generate_history(3, 10, "1d", start="someday")


def lag_correlations(returns: np.ndarray, lags=(1, 2, 3)) -> tuple[dict[int, float], float]:
    """Pooled lag correlations of standardised returns (bars x symbols) and their standard error.

    The symbols share the market factor, so the pooled estimate is worth fewer than
    N = bars x symbols independent pairs: the standard error 1/sqrt(N) is inflated by the
    design effect 1 + (k - 1) * (mean squared cross-correlation of the k symbols).
    """
    z = (returns - returns.mean(axis=0)) / returns.std(axis=0)
    corr = {lag: float((z[lag:] * z[:-lag]).mean()) for lag in lags}
    k = returns.shape[1]
    cross = np.corrcoef(returns.T)[~np.eye(k, dtype=bool)]
    se = math.sqrt((1 + (k - 1) * np.mean(cross**2)) / returns.size)
    return corr, se


def test_the_planted_echo_is_recovered_at_lag_3_only() -> None:
    # Minute bars differ from daily ones only in scale, which correlations do not see.
    alpha = 0.3
    r = log_returns(generate_history(20, 2_000, "1d", seed=21, alpha=alpha)).to_numpy()
    corr, se = lag_correlations(r)
    assert se < 0.02
    assert abs(corr[3] - alpha) < 4 * se
    assert abs(corr[1]) < 4 * se and abs(corr[2]) < 4 * se
    # the index carries the echo on its own (one series: standard error 1/sqrt(bars))
    mkt = r[:, 0]
    assert abs(np.corrcoef(mkt[3:], mkt[:-3])[0, 1] - alpha) < 4 / math.sqrt(len(mkt))

    plain = log_returns(generate_history(20, 2_000, "1d", seed=21)).to_numpy()
    corr0, se0 = lag_correlations(plain)
    assert all(abs(c) < 4 * se0 for c in corr0.values())


def test_returns_follow_the_market_factor_with_beta() -> None:
    r = log_returns(generate_history(30, 1_000, "1d", seed=4)).to_numpy()
    corr = np.array([np.corrcoef(r[:, 0], r[:, i])[0, 1] for i in range(1, 30)])
    assert corr.mean() > 0.3 and (corr > 0).all()
    # daily index volatility annualises to the market's 16%
    assert abs(r[:, 0].std() * math.sqrt(252) - 0.16) < 0.02


# --- the command ----------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, ["history", "synthetic", *args])


@pytest.mark.parametrize(("interval", "n_bars"), [("1d", 25), ("1m", 400)])
def test_output_writes_files_backfill_can_read(tmp_path, interval: str, n_bars: int) -> None:
    out = tmp_path / "bars"
    result = invoke("--interval", interval, "--symbols", "3", "--bars", str(n_bars), "--alpha", "0.2",
                    "--seed", "9", "--start", "2024-01-02", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert f"3 symbol(s) x {n_bars} {interval} bar(s)" in result.stdout
    assert "alpha 0.2, seed 9 -> 3 CSV file(s) in" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["MKT.csv", "S0001.csv", "S0002.csv"]

    expected = generate_history(3, n_bars, interval, seed=9, alpha=0.2, start="2024-01-02")
    for symbol in ("MKT", "S0001", "S0002"):
        bar_file = parse_bar_file(out / f"{symbol}.csv")
        rows = expected[expected["symbol"] == symbol].reset_index(drop=True)
        assert (bar_file.interval, bar_file.skipped, len(bar_file.bars)) == (interval, 0, n_bars)
        assert bar_file.bars["ts"].equals(rows["window_start"].rename("ts"))
        for col in ("open", "high", "low", "close", "volume"):
            np.testing.assert_allclose(bar_file.bars[col], rows[col], rtol=1e-13, err_msg=col)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "1"], "error: --alpha must be in [0, 1), got 1.0"),
        (["--alpha", "-0.1"], "error: --alpha must be in [0, 1), got -0.1"),
        (["--interval", "5m"], "error: --interval must be one of 1d, 1m, got '5m'"),
        (["--symbols", "0"], "error: --symbols must be between 1 and 9,999, got 0"),
        (["--bars", "0"], "error: --bars must be at least 1, got 0"),
        (["--start", "someday"], "error: --start 'someday' is not a date (e.g. 2018-01-01)"),
    ],
)
def test_bad_options_are_one_clear_line(tmp_path, args: list[str], message: str) -> None:
    result = invoke(*args, "--output", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_refused(tmp_path) -> None:
    target = tmp_path / "file.csv"
    target.write_text("x\n")
    result = invoke("--output", str(target))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: --output {target} exists and is not a directory"


def test_help_explains_the_alpha() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "corr(r_t, r_(t-3)) = A" in result.stdout
    assert "tickcast backfill" in result.stdout


# --- Delta ----------------------------------------------------------------------------


@pytest.mark.slow  # two Spark MERGEs through the quality gate
def test_load_into_delta_twice_leaves_the_same_rows(spark, settings) -> None:
    bars = generate_history(3, 50, "1d", seed=5, alpha=0.3)
    first = backfill_frame(spark, settings, bars, interval="1d", label="test")
    assert (first.table, first.bars, first.inserted, first.updated, first.quarantined) == (
        "bars_1d", 150, 150, 0, 0,
    )
    assert first.symbol == "MKT, S0001, S0002"
    second = backfill_frame(spark, settings, bars, interval="1d", label="test")
    assert (second.inserted, second.updated) == (0, 150)

    stored = (
        spark.read.format("delta").load(tables.table_path(settings, "bars_1d"))
        .orderBy("symbol", "window_start")
    )
    assert stored.count() == 150
    assert stored.filter("updated_at IS NULL").count() == 0
    rows = [
        (r.symbol, r.window_start.to_pydatetime(), r.window_end.to_pydatetime(), r.open, r.high,
         r.low, r.close, r.volume, int(r.trades), r.window_start.to_pydatetime(),
         r.window_end.to_pydatetime() - US, datetime(2026, 1, 1, tzinfo=UTC))
        for r in bars.itertuples(index=False)
    ]
    expected = spark.createDataFrame(rows, schema=table_defs()["bars_1d"].schema())
    assert_df_equality(stored.drop("updated_at"), expected.drop("updated_at"), ignore_nullable=True)


def test_earnings_days_reverse_the_echo_and_the_calendar_is_collected_earnings() -> None:
    alpha = 0.35
    bars, earnings = generate_market(3, 400, "1d", alpha=alpha, seed=7, earnings_every=21)
    base, _ = generate_market(3, 400, "1d", alpha=0.0, seed=7, earnings_every=21)
    assert sorted(earnings["symbol"].unique()) == ["S0001", "S0002"]  # the index reports nothing
    assert earnings.groupby("symbol").size().tolist() == [19, 19]
    assert earnings["eps_surprise"].notna().all() and (earnings["hour"] == "amc").all()
    flags = earnings_window(bars, earnings).reshape(3, 400)
    assert flags[0].sum() == 0 and 35 <= flags[1].sum() <= 60
    for i, symbol in enumerate(["MKT", "S0001", "S0002"]):
        r = np.diff(np.log(bars.loc[bars.symbol == symbol, "close"].to_numpy()))
        s = np.diff(np.log(base.loc[base.symbol == symbol, "close"].to_numpy()))
        coefficient = np.where(flags[i][1:] > 0, -alpha, alpha)
        # Bar t's return = +-alpha x the return three bars earlier + the scaled base return.
        np.testing.assert_allclose(r[3:], coefficient[3:] * r[:-3] + noise_scale(alpha) * s[3:], atol=1e-9)


def test_a_calendar_continued_past_the_bars_changes_no_bar_and_schedules_without_actuals() -> None:
    bars, earnings = generate_market(3, 300, "1d", alpha=0.3, seed=5, earnings_every=21)
    until = datetime.now(UTC) + timedelta(days=14)
    longer_bars, longer = generate_market(3, 300, "1d", alpha=0.3, seed=5, earnings_every=21, calendar_until=until)
    pd.testing.assert_frame_equal(bars, longer_bars)
    key = ["symbol", "report_date"]
    # Every report of the bars' span is kept, with the same dates.
    pd.testing.assert_frame_equal(longer.merge(earnings[key], on=key)[key], earnings[key])
    later = longer[pd.to_datetime(longer["report_date"]) > pd.Timestamp(bars["window_start"].max().date())]
    assert len(later) > 0 and pd.to_datetime(later["report_date"]).max() <= pd.Timestamp(until.date())
    scheduled = later[pd.to_datetime(later["available_at"], utc=True) > datetime.now(UTC)]
    assert scheduled["eps_actual"].isna().all() and scheduled["eps_surprise"].isna().all()
