"""Bar-file parsing: every Yahoo layout, column order, date format, and the bad cases."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
from feed_helpers import DATA
from pandas.testing import assert_frame_equal

from tickcast.feeds.barfiles import BarFileError, parse_bar_file, parse_bar_text

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def sample_bars(n: int | None = None) -> pd.DataFrame:
    """daily_sample.csv read with the csv module, independently of the parser under test."""
    with (DATA / "daily_sample.csv").open() as fh:
        rows = list(csv.DictReader(fh))[:n]
    return pd.DataFrame(
        {
            "ts": pd.to_datetime([r["Date"] for r in rows]).tz_localize("UTC").astype("datetime64[ns, UTC]"),
            "open": [float(r["Open"]) for r in rows],
            "high": [float(r["High"]) for r in rows],
            "low": [float(r["Low"]) for r in rows],
            "close": [float(r["Close"]) for r in rows],
            "volume": [float(r["Volume"]) for r in rows],
        }
    )


def test_daily_sample_csv() -> None:
    parsed = parse_bar_file(DATA / "daily_sample.csv")
    assert parsed.interval == "1d"
    assert parsed.daily
    assert parsed.skipped == 0
    assert len(parsed.bars) == 30
    assert list(parsed.bars.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert_frame_equal(parsed.bars, sample_bars(), check_exact=True)


def test_lowercase_shuffled_columns_us_dates_and_thousands_separators() -> None:
    parsed = parse_bar_file(DATA / "daily_us_dates.csv")
    assert parsed.interval == "1d"
    assert_frame_equal(parsed.bars, sample_bars(5), check_exact=True)


def test_yfinance_three_line_header() -> None:
    parsed = parse_bar_file(DATA / "yfinance_multiheader.csv")
    assert parsed.interval == "1d"
    assert_frame_equal(parsed.bars, sample_bars(3), check_exact=True)


def test_copied_yahoo_table_skips_dividends_splits_and_dashes() -> None:
    parsed = parse_bar_file(DATA / "yahoo_copied_table.tsv")
    assert parsed.interval == "1d"
    # dividend line, split line, the "-" row and the footnote
    assert parsed.skipped == 4
    assert parsed.notes and "not price bars" in parsed.notes[0]
    bars = parsed.bars
    assert [t.strftime("%Y-%m-%d") for t in bars["ts"]] == [
        "2024-02-07", "2024-02-08", "2024-02-09", "2024-02-12", "2024-02-13",
    ]
    assert bars["volume"].tolist() == [32492937.0, 49914586.0, 55044377.0, 58681155.0, 51354079.0]
    assert bars.iloc[-1][["open", "high", "low", "close"]].tolist() == [180.02, 181.39, 179.86, 180.54]


def test_daily_bars_keep_the_printed_date_whatever_the_offset() -> None:
    # Tokyo midnight is the previous day in UTC; the bar still belongs to its own date.
    parsed = parse_bar_file(DATA / "daily_tz_offset.csv")
    assert parsed.interval == "1d"
    assert [t.isoformat() for t in parsed.bars["ts"]] == [
        "2024-01-04T00:00:00+00:00", "2024-01-05T00:00:00+00:00", "2024-01-09T00:00:00+00:00",
    ]


def test_intraday_one_minute_with_utc_offset() -> None:
    parsed = parse_bar_file(DATA / "intraday_1m_sample.csv")
    assert parsed.interval == "1m"
    assert not parsed.daily
    assert len(parsed.bars) == 30
    # 09:30 at -05:00 is 14:30 UTC
    assert parsed.bars["ts"].iloc[0] == pd.Timestamp("2024-01-02T14:30:00Z")
    assert parsed.bars["ts"].iloc[-1] == pd.Timestamp("2024-01-02T14:59:00Z")
    assert parsed.bars["ts"].diff().dropna().eq(pd.Timedelta(minutes=1)).all()
    assert parsed.bars["volume"].iloc[0] == 1843210.0


def test_intraday_naive_datetimes_are_utc_and_null_rows_skipped() -> None:
    parsed = parse_bar_file(DATA / "intraday_5m_naive.csv")
    assert parsed.interval == "5m"
    assert parsed.skipped == 1
    assert parsed.bars["ts"].tolist() == [
        pd.Timestamp(f"2024-01-03T14:{m}:00Z") for m in ("30", "35", "45", "50")
    ]
    assert parsed.bars["volume"].tolist() == [12500.5, 8300.0, 7101.0, 0.0]


@pytest.mark.parametrize(
    "date_text",
    ["2024-01-02", "01/02/2024", '"Jan 2, 2024"', '"January 2, 2024"', "2024/01/02", "02-Jan-2024"],
)
def test_date_layouts(date_text: str) -> None:
    parsed = parse_bar_text(HEADER + f"{date_text},10,11,9,10.5,10.4,1000\n")
    assert parsed.bars["ts"].tolist() == [pd.Timestamp("2024-01-02T00:00:00Z")]
    assert parsed.interval == "1d"


def test_day_first_dates_when_month_first_cannot_parse() -> None:
    text = HEADER + "13/01/2024,10,11,9,10.5,10.4,1000\n14/01/2024,10,11,9,10.5,10.4,1000\n"
    parsed = parse_bar_text(text)
    assert parsed.bars["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-13", "2024-01-14"]


def test_datetime_with_offsets_across_a_dst_change() -> None:
    text = (
        "Datetime,Open,High,Low,Close,Volume\n"
        "2024-03-08 15:59:00-05:00,10,11,9,10.5,100\n"
        "2024-03-11 09:30:00-04:00,10,11,9,10.5,100\n"
        "2024-03-11 09:31:00-04:00,10,11,9,10.5,100\n"
        "2024-03-11 09:32:00-04:00,10,11,9,10.5,100\n"
    )
    parsed = parse_bar_text(text)
    assert parsed.interval == "1m"
    assert parsed.bars["ts"].tolist() == [
        pd.Timestamp("2024-03-08T20:59:00Z"),
        pd.Timestamp("2024-03-11T13:30:00Z"),
        pd.Timestamp("2024-03-11T13:31:00Z"),
        pd.Timestamp("2024-03-11T13:32:00Z"),
    ]


def test_header_case_spacing_and_extra_columns() -> None:
    text = (
        " VOLUME ;adj_close; close ;Low;HIGH;open;DATE;Dividends\n"
        "1000;10.4;10.5;9;11;10;2024-01-02;0\n"
    )
    parsed = parse_bar_text(text)
    assert parsed.bars.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        10.0, 11.0, 9.0, 10.5, 1000.0,
    ]


def test_rows_are_sorted_and_duplicates_keep_the_last() -> None:
    text = HEADER + (
        "2024-01-03,10,11,9,10.5,10.4,1000\n"
        "2024-01-02,20,21,19,20.5,20.4,2000\n"
        "2024-01-03,30,31,29,30.5,30.4,3000\n"
    )
    parsed = parse_bar_text(text)
    assert parsed.bars["open"].tolist() == [20.0, 30.0]
    assert parsed.skipped == 1


def test_impossible_bars_are_skipped_with_a_note() -> None:
    text = HEADER + (
        "2024-01-02,10,11,9,10.5,10.4,1000\n"
        "2024-01-03,10,9.5,9,10.5,10.4,1000\n"  # high below the close
        "2024-01-04,0,11,0,10.5,10.4,1000\n"  # zero price
    )
    parsed = parse_bar_text(text)
    assert len(parsed.bars) == 1
    assert parsed.skipped == 2
    assert any("impossible" in note for note in parsed.notes)


@pytest.mark.parametrize(
    "dates, interval",
    [
        (["2024-01-01", "2024-01-08", "2024-01-15"], "1wk"),
        (["2024-01-01", "2024-02-01", "2024-03-01"], "1mo"),
        (["2024-01-02 10:00", "2024-01-02 11:00", "2024-01-02 12:00"], "1h"),
        (["2024-01-02 10:00", "2024-01-02 10:15", "2024-01-02 10:30"], "15m"),
        (["2024-01-02 16:00", "2024-01-03 16:00", "2024-01-04 16:00"], "1d"),
        (["2024-01-02", "2024-02-14"], "1d"),  # sparse daily bars are still daily
    ],
)
def test_interval_detection(dates: list[str], interval: str) -> None:
    text = HEADER + "".join(f"{d},10,11,9,10.5,10.4,1000\n" for d in dates)
    assert parse_bar_text(text).interval == interval


def test_single_intraday_bar_needs_an_explicit_interval() -> None:
    text = "Datetime,Open,High,Low,Close,Volume\n2024-01-02 14:30:00,10,11,9,10.5,100\n"
    with pytest.raises(BarFileError, match="--interval"):
        parse_bar_text(text)
    assert parse_bar_text(text, interval="1m").interval == "1m"


def test_missing_required_column_is_a_clear_error() -> None:
    with pytest.raises(BarFileError, match=r"missing required column\(s\): Close"):
        parse_bar_file(DATA / "bad_missing_close.csv")


def test_missing_date_column_is_a_clear_error() -> None:
    with pytest.raises(BarFileError, match="Date \\(or Datetime\\)"):
        parse_bar_text("Open,High,Low,Close,Volume\n1,2,0.5,1.5,10\n")


def test_no_usable_rows_is_a_clear_error() -> None:
    with pytest.raises(BarFileError, match="no usable price bars.*2 row"):
        parse_bar_file(DATA / "bad_no_usable_rows.csv")


def test_empty_and_missing_files(tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(BarFileError, match="empty"):
        parse_bar_file(empty)
    with pytest.raises(BarFileError, match="no such file"):
        parse_bar_file(tmp_path / "absent.csv")
    with pytest.raises(BarFileError, match="not an interval"):
        parse_bar_file(DATA / "daily_sample.csv", interval="fortnightly")
