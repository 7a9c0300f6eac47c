"""When a prediction is stale: its data is older than the interval of its bars allows
(``tickcast.core.predictions.is_stale``), the interval read from its horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tickcast.core.intervals import INTERVALS, horizon_interval, horizon_label
from tickcast.core.predictions import Prediction, Probabilities, is_stale, stale_after

# A Friday close (21:00 UTC, 16:00 in New York).
FRIDAY_CLOSE = datetime(2026, 3, 6, 21, 0, tzinfo=UTC)


def _prediction(horizon: str, data_timestamp: datetime) -> Prediction:
    return Prediction(symbol="AAPL", horizon=horizon, predicted_return=0.0, predicted_price=100.0, p10=-0.01,
                      p50=0.0, p90=0.01, probabilities=Probabilities(up=0.3, neutral=0.4, down=0.3), signal="HOLD",
                      confidence=0.4, model_name="momentum-baseline", model_version="1",
                      data_timestamp=data_timestamp, predicted_at=data_timestamp + timedelta(seconds=1))


def test_each_interval_allows_its_own_age() -> None:
    assert INTERVALS["1d"].stale_after == timedelta(days=4)
    assert INTERVALS["1m"].stale_after == timedelta(minutes=15)


@pytest.mark.parametrize(("horizon", "interval"), [
    ("1d", "1d"), ("5d", "1d"), ("20d", "1d"), ("1m", "1m"), ("30m", "1m"), ("90m", "1m"), ("1h", "1m"), ("2h", "1m"),
])
def test_the_horizon_names_the_interval_of_the_bars(horizon: str, interval: str) -> None:
    assert horizon_interval(horizon) is INTERVALS[interval]
    assert stale_after(horizon) == INTERVALS[interval].stale_after


@pytest.mark.parametrize(("interval", "bars"), [("1d", 1), ("1d", 5), ("1m", 1), ("1m", 30), ("1m", 60), ("1m", 90)])
def test_a_written_horizon_reads_back_as_its_interval(interval: str, bars: int) -> None:
    assert horizon_interval(horizon_label(interval, bars)) is INTERVALS[interval]


@pytest.mark.parametrize("horizon", ["", "d", "0d", "05d", "5w", "1D", "1 d", "1d ", "-1d", "1.5d", "daily"])
def test_a_horizon_that_names_no_interval_is_a_value_error(horizon: str) -> None:
    with pytest.raises(ValueError, match="horizon"):
        horizon_interval(horizon)
    with pytest.raises(ValueError, match="horizon"):
        is_stale(FRIDAY_CLOSE, horizon, FRIDAY_CLOSE)


@pytest.mark.parametrize(("horizon", "limit"), [("1d", timedelta(days=4)), ("5d", timedelta(days=4)),
                                                 ("30m", timedelta(minutes=15)), ("1h", timedelta(minutes=15))])
def test_stale_only_past_the_limit(horizon: str, limit: timedelta) -> None:
    data = FRIDAY_CLOSE
    assert not is_stale(data, horizon, data)
    assert not is_stale(data, horizon, data + limit)  # exactly the limit: not yet
    assert is_stale(data, horizon, data + limit + timedelta(microseconds=1))
    # Data from the future (clocks apart) is not stale.
    assert not is_stale(data, horizon, data - timedelta(hours=1))


def test_a_long_weekend_is_not_stale_but_a_missed_day_is() -> None:
    tuesday_open = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)  # after a Monday holiday
    assert not is_stale(FRIDAY_CLOSE, "1d", tuesday_open)
    assert not is_stale(FRIDAY_CLOSE, "1d", tuesday_open + timedelta(hours=6, minutes=30))  # Tuesday's close
    assert is_stale(FRIDAY_CLOSE, "1d", datetime(2026, 3, 11, 14, 30, tzinfo=UTC))  # Wednesday without a bar
    # What the issue saw: data 4.8 years old, shown as a normal HOLD.
    assert is_stale(FRIDAY_CLOSE, "1d", FRIDAY_CLOSE + timedelta(days=4.8 * 365))


def test_minute_data_is_stale_after_a_quarter_of_an_hour() -> None:
    last_trade = datetime(2026, 3, 6, 15, 0, 30, tzinfo=UTC)
    assert not is_stale(last_trade, "30m", last_trade + timedelta(minutes=14, seconds=59))
    assert is_stale(last_trade, "30m", last_trade + timedelta(minutes=15, seconds=1))
    # The same age is fresh for a prediction from daily bars.
    assert not is_stale(last_trade, "1d", last_trade + timedelta(minutes=15, seconds=1))


def test_a_prediction_says_whether_it_is_stale() -> None:
    prediction = _prediction("1d", FRIDAY_CLOSE)
    assert not prediction.is_stale(FRIDAY_CLOSE + timedelta(days=4))
    assert prediction.is_stale(FRIDAY_CLOSE + timedelta(days=4, seconds=1))
    # Without an instant, now.
    assert _prediction("1d", datetime.now(UTC) - timedelta(days=4, minutes=1)).is_stale()
    assert not _prediction("30m", datetime.now(UTC)).is_stale()
