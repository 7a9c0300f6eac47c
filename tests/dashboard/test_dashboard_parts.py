"""The dashboard's pieces without a browser: layout ids, figure and card contents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from dash import html

from dashboard.app import CHART_ID, candle_figure, create_app, prediction_card
from tests.serving.market_data import make_prediction
from tickcast.catalog.market import Bar
from tickcast.core.settings import Settings


def _ids(component) -> set[str]:
    found = set()
    if getattr(component, "id", None):
        found.add(component.id)
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found |= _ids(child)
    return found


def test_layout_has_the_controls_and_the_refresh_rate(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"dashboard_refresh_seconds": 3.5}))
    layout = app.layout
    assert {CHART_ID, "symbol", "interval", "prediction", "refresh", "status"} <= _ids(layout)
    refresh = next(c for c in layout.children if getattr(c, "id", None) == "refresh")
    assert refresh.interval == 3500
    # Building the app read nothing and created nothing.
    assert not settings.home_dir.exists()


def test_candle_figure_holds_the_bars_in_order() -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    bars = [
        Bar("AAPL", start + timedelta(days=i), start + timedelta(days=i + 1),
            10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0, 3)
        for i in range(3)
    ]
    fig = candle_figure("AAPL", "1d", bars)
    candles = fig.data[0]
    assert candles.type == "candlestick"
    assert list(candles.close) == [10.5, 11.5, 12.5]
    assert [str(x) for x in candles.x] == [f"2024-01-0{d} 00:00:00" for d in (2, 3, 4)]
    assert fig.layout.title.text == "AAPL · 1d bars"
    assert candle_figure("AAPL", "1m", []).layout.title.text == "AAPL · 1m bars (none yet)"
    # Daily bars read as dates; one bar gets an axis of days around it, not of microseconds.
    assert fig.layout.xaxis.tickformat == "%Y-%m-%d" and fig.layout.xaxis.range is None
    one = candle_figure("AAPL", "1d", bars[:1])
    low, high = (pd.Timestamp(v) for v in one.layout.xaxis.range)
    assert low == pd.Timestamp("2023-12-30") and high == pd.Timestamp("2024-01-05")
    assert candle_figure("AAPL", "1m", bars[:1]).layout.xaxis.tickformat is None


def test_prediction_card_shows_the_contract_fields() -> None:
    prediction = make_prediction("MSFT", datetime(2024, 2, 1, tzinfo=UTC), 400.0)
    card = html.Div(prediction_card("MSFT", prediction))
    text = str(card)
    # Returns as percentages, prices as prices: the quantiles are returns, shown as both.
    for fragment in ("BUY", "+1.23%", "404.92", "-2.00% / +1.23% / +4.00%", "392.00 / 416.00", "55% / 25% / 20%",
                     "momentum-baseline v1", "2024-02-01 00:00:00 UTC"):
        assert fragment in text, fragment
    # The baseline says so on the badge and beside the model; a champion's prediction does not.
    assert "BUY · baseline" in text and "baseline: no champion model yet" in text
    champion = prediction.model_copy(update={"model_name": "tickcast-lstm-1d+tickcast-transformer-1d"})
    assert "baseline" not in str(html.Div(prediction_card("MSFT", champion)))
    # Which route served it: a normal day, or the earnings-day model.
    assert "normal day" in text and "earnings day" not in text
    earnings_day = champion.model_copy(update={"route": "earnings"})
    assert "earnings day (the earnings-day model)" in str(html.Div(prediction_card("MSFT", earnings_day)))
    assert "No prediction yet" in str(html.Div(prediction_card("MSFT", None)))
