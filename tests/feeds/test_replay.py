"""Replay: 4 ticks per bar that aggregate back to the bar, and the real broker round trip."""

from __future__ import annotations

import pandas as pd
from feed_helpers import DATA, assert_valid_tick, consume_all, decode
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from tickcast.cli import app
from tickcast.feeds.barfiles import parse_bar_file, parse_bar_text
from tickcast.feeds.producer import TickProducer
from tickcast.feeds.replay import expand_bars, replay_bars

BAR_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


def aggregate(ticks: pd.DataFrame, freq: str) -> pd.DataFrame:
    """What a bar builder does: event-time windows, first/max/min/last price, summed volume."""
    ordered = ticks.sort_values("ts", kind="stable").assign(ts=lambda d: d["ts"].dt.floor(freq))
    bars = ordered.groupby("ts", sort=True).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"),
        close=("price", "last"), volume=("volume", "sum"),
    )
    return bars.reset_index()[BAR_COLUMNS]


def test_daily_bars_become_four_ordered_ticks_inside_the_utc_day() -> None:
    bar_file = parse_bar_file(DATA / "daily_sample.csv")
    ticks = expand_bars(bar_file.bars, symbol="AAPL", interval="1d")
    assert len(ticks) == 4 * 30
    first = ticks.head(4)
    assert first["leg"].tolist() == ["open", "high", "low", "close"]
    assert first["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S").tolist() == [
        "2024-01-02T14:30:00", "2024-01-02T16:00:00", "2024-01-02T18:00:00", "2024-01-02T20:59:59",
    ]
    assert first["price"].tolist() == [191.70, 192.34, 190.15, 190.83]
    # strictly increasing over the whole file, and every tick in its bar's UTC day
    assert ticks["ts"].is_monotonic_increasing and ticks["ts"].is_unique
    assert (ticks["ts"].dt.floor("1D") == ticks["bar_ts"]).all()
    assert (ticks["symbol"] == "AAPL").all()


def test_aggregating_daily_ticks_reproduces_the_bars_exactly() -> None:
    bar_file = parse_bar_file(DATA / "daily_sample.csv")
    ticks = expand_bars(bar_file.bars, symbol="AAPL", interval="1d")
    assert_frame_equal(aggregate(ticks, "1D"), bar_file.bars, check_exact=True)


def test_aggregating_one_minute_ticks_reproduces_the_bars_exactly() -> None:
    bar_file = parse_bar_file(DATA / "intraday_1m_sample.csv")
    ticks = expand_bars(bar_file.bars, symbol="AAPL", interval="1m")
    offsets = (ticks["ts"] - ticks["bar_ts"]).dt.total_seconds().tolist()
    assert offsets[:8] == [0.0, 15.0, 30.0, 45.0] * 2
    assert_frame_equal(aggregate(ticks, "1min"), bar_file.bars, check_exact=True)


def test_volume_split_even_with_remainder_on_close_and_fractions_on_close() -> None:
    text = (
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-02,10,11,9,10.5,1003\n"
        "2024-01-03,10,11,9,10.5,2\n"
        "2024-01-04,10,11,9,10.5,12500.5\n"
    )
    bars = parse_bar_text(text).bars
    ticks = expand_bars(bars, symbol="X", interval="1d")
    assert ticks["volume"].tolist() == [
        250.0, 250.0, 250.0, 253.0,
        0.0, 0.0, 0.0, 2.0,
        0.0, 0.0, 0.0, 12500.5,
    ]


def test_msg_ids_are_deterministic_and_unique() -> None:
    bars = parse_bar_file(DATA / "intraday_1m_sample.csv").bars
    once = expand_bars(bars, symbol="AAPL", interval="1m")["msg_id"]
    again = expand_bars(bars, symbol="AAPL", interval="1m")["msg_id"]
    other = expand_bars(bars, symbol="MSFT", interval="1m")["msg_id"]
    assert once.tolist() == again.tolist()
    assert once.is_unique
    assert set(once).isdisjoint(other)
    assert once.iloc[0] == "replay-AAPL-1m-20240102T143000Z-o"


def test_replay_to_kafka_round_trip(settings, kafka_bootstrap: str, topic: str) -> None:
    bar_file = parse_bar_file(DATA / "daily_sample.csv")
    with TickProducer(settings, bootstrap_servers=kafka_bootstrap, topic=topic) as producer:
        replay_bars(producer, bar_file, symbol="AAPL", show_progress=False)
    assert (producer.stats.produced, producer.stats.delivered, producer.stats.failed) == (120, 120, 0)

    messages = consume_all(kafka_bootstrap, topic, 120)
    assert len(messages) == 120
    assert {m.key() for m in messages} == {b"AAPL"}
    payloads = decode(messages)
    for payload in payloads:
        assert_valid_tick(payload)
    assert {p["source"] for p in payloads} == {"replay:daily_sample"}
    assert {p["bid"] for p in payloads} == {None}
    # One key = one partition, so the consumer sees the send order.
    assert [p["ts"] for p in payloads] == sorted(p["ts"] for p in payloads)
    received = pd.DataFrame(
        {
            "ts": pd.to_datetime([p["ts"] for p in payloads], utc=True),
            "price": [p["price"] for p in payloads],
            "volume": [p["volume"] for p in payloads],
        }
    )
    assert_frame_equal(aggregate(received, "1D"), bar_file.bars, check_exact=True)


def test_replay_command_with_speed(kafka_bootstrap: str, topic: str) -> None:
    result = CliRunner().invoke(
        app,
        ["produce", "replay", str(DATA / "intraday_1m_sample.csv"), "--symbol", "aapl",
         "--speed", "1000000", "--no-progress", "-b", kafka_bootstrap, "--topic", topic],
    )
    assert result.exit_code == 0, result.output
    assert "produced 120, delivered 120, failed 0" in result.output
    messages = consume_all(kafka_bootstrap, topic, 120)
    assert len(messages) == 120
    assert {m.key() for m in messages} == {b"AAPL"}
    assert decode(messages)[0]["msg_id"] == "replay-AAPL-1m-20240102T143000Z-o"


def test_replay_command_bad_file_is_one_clear_line() -> None:
    result = CliRunner().invoke(
        app, ["produce", "replay", str(DATA / "bad_no_usable_rows.csv"), "--symbol", "X"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {DATA / 'bad_no_usable_rows.csv'}: no usable price bars "
        "(2 row(s) skipped as not price bars)"
    ]
    assert "Traceback" not in result.output
