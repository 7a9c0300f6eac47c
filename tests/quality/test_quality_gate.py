"""QualityGate.validate: each suite catches each kind of bad row, names it, and counts it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_df_equality

from tests.quality.quality_rows import T0, bar, feature_row, frame, tick
from tickcast.quality import QualityGate
from tickcast.quality.gate import _GxRunner

TS_MAX = {"ts_max": T0 + timedelta(minutes=30)}
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)

BETWEEN = "expectation:expect_column_values_to_be_between"
NOT_NULL = "expectation:expect_column_values_to_not_be_null"
PAIR = "expectation:expect_column_pair_values_a_to_be_greater_than_b"


def expected_failed(spark, outcome, rows):
    return spark.createDataFrame(rows, outcome.failed.schema)


def counts(outcome) -> dict[str, int]:
    return {r.expectation: r.rows_failed for r in outcome.results if r.rows_failed}


@pytest.fixture
def gate(settings) -> QualityGate:
    return QualityGate(settings)


def test_good_ticks_pass_with_nothing_failed(spark, gate, settings) -> None:
    rows = [tick(0), tick(1, bid=None, ask=None), tick(2, volume=0.0)]
    outcome = gate.validate(frame(spark, "ticks", rows), "ticks", ["msg_id"], TS_MAX,
                            table="ticks", layer="stream", run_id="app:1")
    assert outcome.success
    assert (outcome.rows_checked, outcome.rows_failed) == (3, 0)
    assert outcome.failed.count() == 0
    assert outcome.failed.columns == ["msg_id", "reason"]
    assert all(r.success and r.rows_checked == 3 and r.rows_failed == 0 for r in outcome.results)
    assert len(outcome.results) == 14
    # Validating needs no directory: the docs are published separately.
    assert not settings.gx_dir.exists()


def test_bad_ticks_are_each_named_with_the_expectation_they_fail(spark, gate) -> None:
    rows = [
        tick(0),
        tick(1, price=-1.0),
        tick(2, price=float("nan")),
        tick(3, price=float("inf")),
        tick(4, ts=T0 + timedelta(hours=1)),  # later than ts_max
        tick(5, ts=FAR_FUTURE),  # beyond pandas' nanosecond range
        tick(6, symbol=None),
        tick(7, symbol="BAD SYMBOL"),
        tick(8, volume=-1.0, bid=0.0),
        tick(9, price=0.0, ts=FAR_FUTURE),
        tick(10, msg_id=None),
        tick(11, msg_id="twice"),
        tick(12, msg_id="twice"),
        tick(13, bid=None, ask=None),
    ]
    outcome = gate.validate(frame(spark, "ticks", rows), "ticks", ["msg_id"], TS_MAX,
                            table="ticks", layer="stream", run_id="app:2")

    unique = "expectation:expect_column_values_to_be_unique(msg_id)"
    assert_df_equality(
        outcome.failed,
        expected_failed(spark, outcome, [
            ("m1", f"{BETWEEN}(price)"),
            ("m2", f"{BETWEEN}(price)"),
            ("m3", f"{BETWEEN}(price)"),
            ("m4", f"{BETWEEN}(ts)"),
            ("m5", f"{BETWEEN}(ts)"),
            ("m6", f"{NOT_NULL}(symbol)"),
            ("m7", "expectation:expect_column_values_to_match_regex(symbol)"),
            ("m8", f"{BETWEEN}(volume);{BETWEEN}(bid)"),
            ("m9", f"{BETWEEN}(price);{BETWEEN}(ts)"),
            (None, f"{NOT_NULL}(msg_id)"),
            ("twice", unique),
            ("twice", unique),
        ]),
        ignore_row_order=True,
    )
    assert (outcome.rows_checked, outcome.rows_failed) == (14, 12)
    assert counts(outcome) == {
        "expect_column_values_to_not_be_null(msg_id)": 1,
        "expect_column_values_to_not_be_null(symbol)": 1,
        "expect_column_values_to_be_unique(msg_id)": 2,
        "expect_column_values_to_match_regex(symbol)": 1,
        "expect_column_values_to_be_between(price)": 4,
        "expect_column_values_to_be_between(volume)": 1,
        "expect_column_values_to_be_between(bid)": 1,
        "expect_column_values_to_be_between(ts)": 3,
    }
    assert not outcome.success and not outcome.errors


def test_ts_bound_is_the_parameter_given_and_defaults_to_now_plus_tolerance(spark, gate, settings) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=settings.future_tolerance_seconds + 3600)
    df = frame(spark, "ticks", [tick(0), tick(1, ts=soon)])

    later = gate.validate(df, "ticks", ["msg_id"], {"ts_max": soon + timedelta(hours=1)})
    assert later.rows_failed == 0

    by_default = gate.validate(df, "ticks", ["msg_id"])
    assert_df_equality(by_default.failed, expected_failed(spark, by_default, [("m1", f"{BETWEEN}(ts)")]))


def test_bars_catch_each_kind_of_bad_bar(spark, gate) -> None:
    rows = [
        bar(0),
        bar(1, high=100.5),  # high < close
        bar(2, low=100.5),  # low > open
        bar(3, close=float("nan")),
        bar(4), bar(4, close=101.5),  # the same (symbol, window_start) twice
        bar(5, low=0.0),
        bar(6, symbol=None),
        bar(7, window_end=bar(7)["window_start"]),
        bar(8, volume=-5.0),
        bar(9, trades=None),  # backfilled bars carry no trade count
        bar(10, window_start=FAR_FUTURE, window_end=FAR_FUTURE + timedelta(minutes=1)),
    ]
    outcome = gate.validate(frame(spark, "bars_1m", rows), "bars", ["symbol", "window_start"], TS_MAX,
                            table="bars_1m", layer="stream", run_id="app:3")

    start = {n: bar(n)["window_start"] for n in range(11)}
    unique = "expectation:expect_compound_columns_to_be_unique(symbol,window_start)"
    assert_df_equality(
        outcome.failed,
        expected_failed(spark, outcome, [
            ("AAPL", start[1], f"{PAIR}(high,close)"),
            ("AAPL", start[2], f"{PAIR}(open,low)"),
            ("AAPL", start[3], f"{BETWEEN}(close);{PAIR}(high,close)"),
            ("AAPL", start[4], unique),
            ("AAPL", start[4], unique),
            ("AAPL", start[5], f"{BETWEEN}(low)"),
            (None, start[6], f"{NOT_NULL}(symbol)"),
            ("AAPL", start[7], f"{PAIR}(window_end,window_start)"),
            ("AAPL", start[8], f"{BETWEEN}(volume)"),
            ("AAPL", FAR_FUTURE, f"{BETWEEN}(window_start)"),
        ]),
        ignore_row_order=True,
    )
    assert (outcome.rows_checked, outcome.rows_failed) == (12, 10)
    assert counts(outcome)["expect_column_pair_values_a_to_be_greater_than_b(high,close)"] == 2


def test_features_catch_each_kind_of_bad_feature_row(spark, gate) -> None:
    rows = [
        feature_row(0),
        feature_row(1, rsi_14=101.0),
        feature_row(2, macd=float("inf")),
        feature_row(3, bollinger_position=float("nan")),
        feature_row(4), feature_row(4, rsi_14=40.0),
        feature_row(5, interval="5m"),
        feature_row(6, interval=None),
        feature_row(7, sma_50_200_cross=0.5),
        feature_row(8, feature_set_version=None),
        feature_row(9, return_1d=-1.5, market_beta=float("-inf")),
        feature_row(10, rsi_14=100.0, sma_50_200_cross=1.0, volatility_5d=0.0),  # edges are fine
    ]
    ids = ["symbol", "interval", "window_start"]
    outcome = gate.validate(frame(spark, "features", rows), "features", ids, TS_MAX,
                            table="features", layer="batch", run_id="backfill-1")

    start = {n: feature_row(n)["window_start"] for n in range(11)}
    unique = "expectation:expect_compound_columns_to_be_unique(symbol,interval,window_start)"
    in_set = "expectation:expect_column_values_to_be_in_set"
    assert_df_equality(
        outcome.failed,
        expected_failed(spark, outcome, [
            ("AAPL", "1m", start[1], f"{BETWEEN}(rsi_14)"),
            ("AAPL", "1m", start[2], f"{BETWEEN}(macd)"),
            ("AAPL", "1m", start[3], f"{BETWEEN}(bollinger_position)"),
            ("AAPL", "1m", start[4], unique),
            ("AAPL", "1m", start[4], unique),
            ("AAPL", "5m", start[5], f"{in_set}(interval)"),
            ("AAPL", None, start[6], f"{NOT_NULL}(interval)"),
            ("AAPL", "1m", start[7], f"{in_set}(sma_50_200_cross)"),
            ("AAPL", "1m", start[8], f"{NOT_NULL}(feature_set_version)"),
            ("AAPL", "1m", start[9], f"{BETWEEN}(return_1d);{BETWEEN}(market_beta)"),
        ]),
        ignore_row_order=True,
    )
    assert (outcome.rows_checked, outcome.rows_failed) == (12, 10)


def test_a_missing_column_fails_every_row_and_its_checks_error(spark, gate, caplog) -> None:
    df = frame(spark, "bars_1d", [bar(0), bar(1)], drop=("trades",))
    with caplog.at_level(logging.ERROR, logger="tickcast.quality"):
        outcome = gate.validate(df, "bars", ["symbol", "window_start"], TS_MAX, table="bars_1d")

    schema = "expectation:expect_table_columns_to_match_set"
    assert_df_equality(
        outcome.failed,
        expected_failed(spark, outcome, [("AAPL", bar(0)["window_start"], schema),
                                         ("AAPL", bar(1)["window_start"], schema)]),
        ignore_row_order=True,
    )
    by_name = {r.expectation: r for r in outcome.results}
    assert by_name["expect_table_columns_to_match_set"].rows_failed == 2
    trades = by_name["expect_column_values_to_be_between(trades)"]
    assert (trades.success, trades.rows_failed) == (False, 0)
    assert "trades" in trades.error
    assert [r.expectation for r in outcome.errors] == ["expect_column_values_to_be_between(trades)"]
    assert "expect_column_values_to_be_between(trades) of suite bars could not be evaluated" in caplog.text


def test_a_gx_failure_lets_the_rows_through_and_reports_every_expectation_errored(
    spark, gate, caplog, monkeypatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("GX broke")

    monkeypatch.setattr(_GxRunner, "validate_pandas", broken)
    df = frame(spark, "ticks", [tick(0), tick(1, price=-1.0)])
    with caplog.at_level(logging.ERROR, logger="tickcast.quality"):
        outcome = gate.validate(df, "ticks", ["msg_id"], TS_MAX, table="ticks", run_id="app:9")

    assert outcome.failed.count() == 0
    assert outcome.rows_failed == 0
    assert len(outcome.results) == 14
    assert all(r.error == "RuntimeError: GX broke" and not r.success and r.rows_failed == 0
               for r in outcome.results)
    assert "suite ticks on ticks (batch run app:9) could not be evaluated" in caplog.text


def test_split_separates_passing_rows_from_failing_rows_with_reasons(spark, gate) -> None:
    df = frame(spark, "ticks", [tick(0), tick(1, price=-1.0), tick(2, msg_id=None, symbol=None)])
    outcome = gate.validate(df, "ticks", ["msg_id"], TS_MAX)
    passed, failing = outcome.split(df)

    assert [r.msg_id for r in passed.collect()] == ["m0"]
    assert failing.columns == [*df.columns, "reason"]
    assert sorted((r.msg_id or "", r.reason) for r in failing.collect()) == [
        ("", f"{NOT_NULL}(msg_id);{NOT_NULL}(symbol)"),
        ("m1", f"{BETWEEN}(price)"),
    ]


@pytest.mark.slow  # GX's Spark engine: several seconds for eight rows
def test_the_spark_engine_finds_the_same_rows(spark, settings) -> None:
    """Above max_driver_rows the gate validates on GX's Spark engine instead of pandas."""
    rows = [
        bar(0),
        bar(1, high=100.5),
        bar(2, low=100.5),
        bar(3, close=float("nan")),
        bar(5, low=0.0),
        bar(6, symbol=None),
        bar(7, window_end=bar(7)["window_start"]),
        bar(10, window_start=FAR_FUTURE, window_end=FAR_FUTURE + timedelta(minutes=1)),
    ]
    df = frame(spark, "bars_1m", rows)
    ids = ["symbol", "window_start"]
    on_pandas = QualityGate(settings).validate(df, "bars", ids, TS_MAX, engine="pandas")
    on_spark = QualityGate(settings, max_driver_rows=len(rows) - 1).validate(df, "bars", ids, TS_MAX)

    assert (on_pandas.engine, on_spark.engine) == ("pandas", "spark")
    assert on_spark.rows_failed == 7
    assert_df_equality(on_spark.failed, on_pandas.failed, ignore_row_order=True)
    assert on_spark.results == on_pandas.results
