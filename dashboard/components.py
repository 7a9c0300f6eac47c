"""What the pages draw, as pure functions of the data: number formats, the prediction card and
the candle chart with its prediction band and signal markers.

Units, said once: a prediction's ``predicted_return`` and quantiles ``p10``/``p50``/``p90`` are
forward returns over its horizon, shown as percentages; prices are prices. A quantile becomes a
price from the close the prediction was made at (``base_close``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tickcast.core.intervals import INTERVALS, horizon_bars, horizon_interval
from tickcast.core.predictions import EARNINGS_ROUTE, Prediction, is_stale
from tickcast.models.momentum import MODEL_NAME as BASELINE_MODEL_NAME

if TYPE_CHECKING:
    import plotly.graph_objects as go

SIGNAL_COLOURS = {"BUY": "#1a7f37", "SELL": "#cf222e", "HOLD": "#6e7781"}
STALE_COLOUR = "#9a6700"
# Fewer bars than this get an axis of this many bar lengths on each side.
MIN_SPAN_BARS = 3
BAND_COLOUR = "rgba(31, 111, 235, 0.18)"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * 100:+.2f}%"


def fmt_price(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:,.2f}"


def fmt_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fmt_ts(value: datetime) -> str:
    return utc(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def base_close(predicted_price: float, predicted_return: float) -> float:
    """The close a prediction was made at (``predicted_price`` is that close times 1 + the
    expected return)."""
    return predicted_price / (1.0 + predicted_return) if predicted_return > -1.0 else float("nan")


def quantile_price(close: float, quantile: float) -> float:
    """A quantile of the forward return as a price, from the close the prediction was made at."""
    return close * (1.0 + quantile)


def quantile_prices(p: Prediction, quantiles: tuple[float, ...]) -> list[float]:
    """The quantiles (forward returns) as prices, from the close the prediction was made at."""
    close = base_close(p.predicted_price, p.predicted_return)
    return [quantile_price(close, q) for q in quantiles]


def is_baseline(model_name: str) -> bool:
    return model_name == BASELINE_MODEL_NAME


def prediction_card(symbol: str | None, prediction: Prediction | None, now: datetime | None = None) -> list[Any]:
    from dash import html

    if symbol is None:
        return [html.H3("Prediction"), html.P("No symbols yet: waiting for bars or predictions.")]
    if prediction is None:
        return [html.H3(symbol), html.P("No prediction yet for this symbol at this interval.", id="prediction-none")]
    p = prediction
    now = now or datetime.now(UTC)
    age = (now - utc(p.data_timestamp)).total_seconds()
    stale = is_stale(p.data_timestamp, p.horizon, now)
    baseline = is_baseline(p.model_name)
    p10_price, p90_price = quantile_prices(p, (p.p10, p.p90))
    rows = [
        ("Horizon", f"{p.horizon} ({horizon_interval(p.horizon).label} bars)"),
        ("Predicted return", fmt_pct(p.predicted_return)),
        ("Predicted price", fmt_price(p.predicted_price)),
        ("Return p10 / p50 / p90", f"{fmt_pct(p.p10)} / {fmt_pct(p.p50)} / {fmt_pct(p.p90)}"),
        ("Price p10 / p90", f"{fmt_price(p10_price)} / {fmt_price(p90_price)}"),
        ("P(up / neutral / down)",
         f"{p.probabilities.up:.0%} / {p.probabilities.neutral:.0%} / {p.probabilities.down:.0%}"),
        ("Confidence", f"{p.confidence:.0%}"),
        ("Model", f"{p.model_name} v{p.model_version}"
                  + (" (baseline: no champion model yet)" if baseline else "")),
        ("Route", "earnings day (the earnings-day model)" if p.route == EARNINGS_ROUTE else "normal day"),
        ("Data timestamp", fmt_ts(p.data_timestamp)),
        ("Predicted at", fmt_ts(p.predicted_at)),
        ("Data age", fmt_age(age) + (" · stale" if stale else "")),
    ]
    badge_style = {"display": "inline-block", "padding": "4px 14px", "borderRadius": "6px", "color": "white",
                   "fontWeight": 700, "fontSize": "20px", "background": SIGNAL_COLOURS.get(p.signal, "#6e7781")}
    if baseline:
        badge_style |= {"opacity": 0.75, "border": "2px dashed white"}
    if stale:
        badge_style |= {"background": "#8c959f", "textDecoration": "line-through"}
    return [
        html.H3(symbol, style={"margin": "0 0 8px"}),
        html.Div(
            f"{p.signal} · baseline" if baseline else p.signal,
            id="prediction-signal",
            title=("The momentum baseline: served until a champion model exists; HOLD-biased, its confidence "
                   "is its measured skill") if baseline else None,
            style=badge_style,
        ),
        html.Div(
            f"STALE: the newest data is {fmt_age(age)} old; do not act on this signal",
            id="prediction-stale",
            style={"color": STALE_COLOUR, "fontWeight": 600, "marginTop": "6px"},
        ) if stale else None,
        html.Table(
            [html.Tr([html.Td(k, className="muted"), html.Td(v, style={"paddingLeft": "10px"})]) for k, v in rows],
            id="prediction-table",
            style={"marginTop": "10px", "borderSpacing": "0 3px"},
        ),
    ]


def _naive(value: datetime) -> datetime:
    # plotly.js has no time zones: hand it naive UTC and say so on the axis.
    return utc(value).astimezone(UTC).replace(tzinfo=None)


def candle_figure(symbol: str | None, interval: str, bars: list[Any], history: list[Prediction] | None = None,
                  latest: Prediction | None = None) -> go.Figure:
    """Candles and volume; with predictions, each one's p10-p90 price band and p50 drawn at the
    time it predicts (its data timestamp plus its horizon), and a marker per BUY or SELL at the
    bar it was made on."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.03)
    x = [_naive(b.window_start) for b in bars]
    fig.add_trace(
        go.Candlestick(x=x, open=[b.open for b in bars], high=[b.high for b in bars], low=[b.low for b in bars],
                       close=[b.close for b in bars], name=symbol or ""),
        row=1, col=1,
    )
    fig.add_trace(go.Bar(x=x, y=[b.volume for b in bars], name="volume", marker_color="#8c959f"), row=2, col=1)
    predictions = sorted({(p.data_timestamp, p.predicted_at): p for p in [*(history or []), *([latest] if latest
                          else [])]}.values(), key=lambda p: utc(p.data_timestamp))
    if predictions:
        _add_band(fig, outcomes(predictions, bars, interval))
        _add_markers(fig, predictions, bars, interval)
    title = f"{symbol} · {interval} bars" if symbol else "No symbol selected"
    if symbol and not bars:
        title += " (none yet)"
    fig.update_layout(
        title=title, template="plotly_white", showlegend=bool(predictions), height=560,
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        margin={"l": 50, "r": 20, "t": 50, "b": 40}, xaxis_rangeslider_visible=False,
        # Keeps the user's zoom across the periodic refreshes of the same chart.
        uirevision=f"{symbol}-{interval}",
    )
    if x and len(x) < MIN_SPAN_BARS:
        # A bar or two: plotly would zoom to a few microseconds around them ("23:59:59.9996").
        length = INTERVALS[interval].length
        span = [x[0] - length * MIN_SPAN_BARS, x[-1] + length * MIN_SPAN_BARS]
        fig.update_xaxes(range=span, row=1, col=1)
        fig.update_xaxes(range=span, row=2, col=1)
    if not INTERVALS[interval].intraday:
        fig.update_xaxes(tickformat="%Y-%m-%d")
    fig.update_xaxes(title_text="time (UTC)", row=2, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    return fig


@dataclass(frozen=True)
class Outcome:
    """A past prediction against what happened: ``realised`` is the close ``horizon`` bars after
    the bar it was made on over that bar's close (None until that bar exists); ``hit`` says
    whether a BUY saw a rise or a SELL a fall (None for HOLD, which calls no direction)."""

    prediction: Prediction
    target: datetime
    realised: float | None
    hit: bool | None


def outcomes(predictions: list[Prediction], bars: list[Any], interval_name: str) -> list[Outcome]:
    step = INTERVALS[interval_name]
    position = {utc(b.window_start): i for i, b in enumerate(bars)}
    found = []
    for p in predictions:
        start = step.floor(utc(p.data_timestamp))
        ahead = horizon_bars(p.horizon)
        i = position.get(start)
        if i is not None and i + ahead < len(bars):
            target = utc(bars[i + ahead].window_start)
            realised: float | None = bars[i + ahead].close / bars[i].close - 1.0
        else:
            target, realised = start + step.length * ahead, None
        hit = None if realised is None or p.signal == "HOLD" else (realised > 0) == (p.signal == "BUY")
        found.append(Outcome(p, target, realised, hit))
    return found


def band_points(found: list[Outcome]) -> dict[str, list[Any]]:
    """The band's x (the bar each prediction's horizon ends on, naive UTC) and its p10 / p50 / p90
    prices, one point per prediction."""
    points: dict[str, list[Any]] = {"x": [], "p10": [], "p50": [], "p90": []}
    for o in found:
        p10, p50, p90 = quantile_prices(o.prediction, (o.prediction.p10, o.prediction.p50, o.prediction.p90))
        points["x"].append(_naive(o.target))
        points["p10"].append(p10)
        points["p50"].append(p50)
        points["p90"].append(p90)
    return points


def _add_band(fig: go.Figure, found: list[Outcome]) -> None:
    import plotly.graph_objects as go

    band = band_points(found)
    mode = "lines+markers" if len(found) < 3 else "lines"
    fig.add_trace(go.Scatter(x=band["x"], y=band["p90"], name="p90", mode=mode, line={"width": 1, "color": "#1f6feb"},
                             hovertemplate="p90 %{y:,.2f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=band["x"], y=band["p10"], name="p10", mode=mode, line={"width": 1, "color": "#1f6feb"},
                             fill="tonexty", fillcolor=BAND_COLOUR, hovertemplate="p10 %{y:,.2f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=band["x"], y=band["p50"], name="p50", mode=mode,
                             line={"width": 1.5, "color": "#1f6feb", "dash": "dash"},
                             hovertemplate="p50 %{y:,.2f}<extra></extra>"), row=1, col=1)


def _add_markers(fig: go.Figure, predictions: list[Prediction], bars: list[Any], interval_name: str) -> None:
    import plotly.graph_objects as go

    step = INTERVALS[interval_name]
    by_start = {utc(b.window_start): b for b in bars}
    for signal, symbol_name, offset in (("BUY", "triangle-up", "low"), ("SELL", "triangle-down", "high")):
        chosen = [p for p in predictions if p.signal == signal]
        if not chosen:
            continue
        xs, ys = [], []
        for p in chosen:
            start = step.floor(utc(p.data_timestamp))
            bar = by_start.get(start)
            close = base_close(p.predicted_price, p.predicted_return)
            xs.append(_naive(start))
            ys.append(getattr(bar, offset) if bar is not None else close)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=signal,
                                 marker={"symbol": symbol_name, "size": 11, "color": SIGNAL_COLOURS[signal]},
                                 hovertemplate=f"{signal} %{{x}}<extra></extra>"), row=1, col=1)
