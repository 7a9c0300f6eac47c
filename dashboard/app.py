"""The analyst dashboard: pick a symbol, see its candles and latest prediction, live.

``create_app(settings)`` returns the Dash app. It runs on Dash's FastAPI backend so that the
same production ASGI server as the API (uvicorn) serves it: ``asgi_app`` is the factory
``tickcast serve dashboard`` hands to uvicorn, with the settings it loaded. It reads through
``tickcast.catalog.market.MarketStore`` directly, not over HTTP. Callbacks are coroutines that push
the blocking store reads to worker threads, so one slow read never stalls other browsers.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tickcast.catalog.market import MarketStore
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS
from tickcast.core.predictions import EARNINGS_ROUTE, Prediction
from tickcast.core.settings import Settings
from tickcast.models.momentum import MODEL_NAME as BASELINE_MODEL_NAME

if TYPE_CHECKING:
    import dash
    import plotly.graph_objects as go

log = logging.getLogger("tickcast.dashboard")

CHART_ID = "candles"
DEFAULT_BARS = 300
SIGNAL_COLOURS = {"BUY": "#1a7f37", "SELL": "#cf222e", "HOLD": "#6e7781"}

_CSS = {
    "page": {"fontFamily": "system-ui, sans-serif", "margin": "0 auto", "maxWidth": "1280px",
             "padding": "12px 20px", "color": "#1f2328"},
    "controls": {"display": "flex", "gap": "24px", "alignItems": "center", "marginBottom": "8px"},
    "main": {"display": "flex", "gap": "16px", "alignItems": "flex-start"},
    "chart": {"flex": "1 1 auto", "minWidth": 0},
    "card": {"flex": "0 0 340px", "border": "1px solid #d0d7de", "borderRadius": "8px",
             "padding": "12px 16px", "background": "#f6f8fa"},
    "muted": {"color": "#656d76", "fontSize": "13px"},
}


# Fewer bars than this get an axis of this many bar lengths on each side.
MIN_SPAN_BARS = 3


def _fmt_pct(value: float) -> str:
    return f"{value * 100:+.2f}%"


def _quantile_prices(p: Prediction, quantiles: tuple[float, ...]) -> list[float]:
    """The quantiles (forward returns) as prices, from the close the prediction was made at
    (``predicted_price`` is that close times 1 + the expected return)."""
    close = p.predicted_price / (1.0 + p.predicted_return) if p.predicted_return > -1.0 else float("nan")
    return [close * (1.0 + q) for q in quantiles]


def _fmt_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def _fmt_ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def prediction_card(symbol: str | None, prediction: Prediction | None) -> list[Any]:
    from dash import html

    if symbol is None:
        return [html.H3("Prediction"), html.P("No symbols yet: waiting for bars or predictions.")]
    if prediction is None:
        return [html.H3(f"{symbol}"), html.P("No prediction yet for this symbol.", id="prediction-none")]
    p = prediction
    data_ts = p.data_timestamp if p.data_timestamp.tzinfo else p.data_timestamp.replace(tzinfo=UTC)
    age = (datetime.now(UTC) - data_ts).total_seconds()
    baseline = p.model_name == BASELINE_MODEL_NAME
    rows = [
        ("Horizon", p.horizon),
        ("Predicted return", _fmt_pct(p.predicted_return)),
        ("Predicted price", f"{p.predicted_price:,.2f}"),
        ("Return p10 / p50 / p90", f"{_fmt_pct(p.p10)} / {_fmt_pct(p.p50)} / {_fmt_pct(p.p90)}"),
        ("Price p10 / p90", " / ".join(f"{price:,.2f}" for price in _quantile_prices(p, (p.p10, p.p90)))),
        ("P(up / neutral / down)",
         f"{p.probabilities.up:.0%} / {p.probabilities.neutral:.0%} / {p.probabilities.down:.0%}"),
        ("Confidence", f"{p.confidence:.0%}"),
        ("Model", f"{p.model_name} v{p.model_version}"
                  + (" (baseline: no champion model yet)" if baseline else "")),
        ("Route", "earnings day (the earnings-day model)" if p.route == EARNINGS_ROUTE else "normal day"),
        ("Data timestamp", _fmt_ts(p.data_timestamp)),
        ("Predicted at", _fmt_ts(p.predicted_at)),
        ("Data age", _fmt_age(age)),
    ]
    return [
        html.H3(symbol, style={"margin": "0 0 8px"}),
        html.Div(
            f"{p.signal} · baseline" if baseline else p.signal,
            id="prediction-signal",
            title=("The momentum baseline: served until a champion model exists; HOLD-biased, its confidence "
                   "is its measured skill") if baseline else None,
            style={"display": "inline-block", "padding": "4px 14px", "borderRadius": "6px",
                   "color": "white", "fontWeight": 700, "fontSize": "20px",
                   "background": SIGNAL_COLOURS.get(p.signal, "#6e7781"),
                   **({"opacity": 0.75, "border": "2px dashed white"} if baseline else {})},
        ),
        html.Table(
            [html.Tr([html.Td(k, style=_CSS["muted"]), html.Td(v, style={"paddingLeft": "10px"})])
             for k, v in rows],
            id="prediction-table",
            style={"marginTop": "10px", "borderSpacing": "0 3px"},
        ),
    ]


def candle_figure(symbol: str | None, interval: str, bars: list[Any]) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22],
                        vertical_spacing=0.03)
    # plotly.js has no time zones: hand it naive UTC and say so on the axis.
    x = [b.window_start.astimezone(UTC).replace(tzinfo=None) for b in bars]
    fig.add_trace(
        go.Candlestick(
            x=x,
            open=[b.open for b in bars],
            high=[b.high for b in bars],
            low=[b.low for b in bars],
            close=[b.close for b in bars],
            name=symbol or "",
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Bar(x=x, y=[b.volume for b in bars], name="volume", marker_color="#8c959f"),
        row=2, col=1,
    )
    title = f"{symbol} · {interval} bars" if symbol else "No symbol selected"
    if symbol and not bars:
        title += " (none yet)"
    fig.update_layout(
        title=title,
        template="plotly_white",
        showlegend=False,
        height=560,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        xaxis_rangeslider_visible=False,
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


def create_app(settings: Settings, store: MarketStore | None = None) -> dash.Dash:
    from dash import Dash, Input, Output, State, dcc, html, no_update

    store = store or MarketStore(settings)

    app = Dash(
        __name__,
        backend="fastapi",
        title="TickCast",
        update_title=None,  # no "Updating..." flicker in the tab every refresh
        health_endpoint="healthz",
    )
    app.layout = html.Div(
        [
            html.H2("TickCast", style={"margin": "4px 0 12px"}),
            html.Div(
                [
                    html.Div(
                        dcc.Dropdown(id="symbol", options=[], value=None, clearable=False,
                                     placeholder="Pick a symbol"),
                        style={"width": "260px"},
                    ),
                    dcc.RadioItems(
                        id="interval",
                        options=[{"label": f" {i}", "value": i} for i in INTERVAL_NAMES],
                        value="1d",
                        inline=True,
                        inputStyle={"marginLeft": "12px"},
                    ),
                    html.Span(id="status", style=_CSS["muted"]),
                ],
                style=_CSS["controls"],
            ),
            html.Div(
                [
                    html.Div(dcc.Graph(id=CHART_ID, config={"displaylogo": False}),
                             style=_CSS["chart"]),
                    html.Div(id="prediction", children=prediction_card(None, None),
                             style=_CSS["card"]),
                ],
                style=_CSS["main"],
            ),
            dcc.Interval(id="refresh", interval=int(settings.dashboard_refresh_seconds * 1000),
                         n_intervals=0),
        ],
        style=_CSS["page"],
    )

    @app.callback(
        Output("symbol", "options"),
        Output("symbol", "value"),
        Input("refresh", "n_intervals"),
        State("symbol", "options"),
        State("symbol", "value"),
    )
    async def refresh_symbols(_n: int, options: list[dict] | None, current: str | None):
        try:
            statuses = await asyncio.to_thread(store.symbols)
        except Exception:  # noqa: BLE001 - keep the page as it is; the next tick retries
            log.exception("reading the symbol list failed")
            return no_update, no_update
        new_options = [
            {"label": s.symbol if s.has_prediction else f"{s.symbol} (no prediction)",
             "value": s.symbol}
            for s in statuses
        ]
        values = [s.symbol for s in statuses]
        value = current if current in values else (values[0] if values else None)
        # Returning unchanged outputs would re-trigger the chart callback on every tick.
        return (
            new_options if new_options != (options or []) else no_update,
            value if value != current else no_update,
        )

    @app.callback(
        Output(CHART_ID, "figure"),
        Output("prediction", "children"),
        Output("status", "children"),
        Input("symbol", "value"),
        Input("interval", "value"),
        Input("refresh", "n_intervals"),
    )
    async def refresh_chart(symbol: str | None, interval: str, _n: int):
        interval = interval if interval in INTERVAL_NAMES else "1d"
        if symbol is None:
            return candle_figure(None, interval, []), prediction_card(None, None), "no data yet"
        try:
            bars, prediction = await asyncio.gather(
                asyncio.to_thread(store.bars.bars, symbol, interval, DEFAULT_BARS),
                asyncio.to_thread(store.latest_prediction, symbol),
            )
        except Exception as exc:  # noqa: BLE001 - shown to the analyst, chart left as it was
            log.exception("reading %s %s failed", symbol, interval)
            return no_update, no_update, f"cannot read data right now ({type(exc).__name__}); retrying"
        status = f"{len(bars)} bars · refreshed {datetime.now(UTC).strftime('%H:%M:%S')} UTC"
        return candle_figure(symbol, interval, bars), prediction_card(symbol, prediction), status

    return app


def asgi_app(settings: Settings):
    """The dashboard as an ASGI app (Dash's FastAPI server), for uvicorn."""
    return create_app(settings).server
