"""One symbol: candles with the prediction band (p10 / p50 / p90 as prices) and signal markers,
the prediction card, signals against what really happened, and what drives the prediction.

URL state: ``/symbol/<SYMBOL>?interval=1d|1m&range=...``; every control rewrites the URL, so a
link restores the view.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from dashboard.components import candle_figure, fmt_pct, fmt_price, outcomes, prediction_card
from tickcast.core.intervals import INTERVAL_NAMES

if TYPE_CHECKING:
    import dash

    from dashboard.data import DashboardData

log = logging.getLogger("tickcast.dashboard.symbol")

PATH_TEMPLATE = "/symbol/<symbol>"
NAME = "Symbol"
TITLE = "Symbol · TickCast"
CHART_ID = "candles"
# How far back each range reaches, in bars of the interval.
RANGES: dict[str, dict[str, int]] = {
    "1d": {"1M": 22, "3M": 66, "1Y": 252, "5Y": 1260},
    "1m": {"1H": 60, "1D": 390, "5D": 1950},
}
DEFAULT_RANGE = {"1d": "1Y", "1m": "1D"}
# Signals listed under the chart, newest first.
HISTORY_ROWS = 30


def view(symbol: str | None, interval: str | None, range_: str | None) -> dict[str, str | None]:
    """The page's state from the URL, with defaults for anything missing or unknown."""
    interval = interval if interval in INTERVAL_NAMES else "1d"
    range_ = range_ if range_ in RANGES[interval] else DEFAULT_RANGE[interval]
    return {"symbol": symbol, "interval": interval, "range": range_}


def layout(data: DashboardData, symbol: str | None = None, interval: str | None = None,
           range: str | None = None, **_: Any) -> Any:  # noqa: A002 - the URL's parameter
    from dash import dcc, html

    state = view(symbol, interval, range)
    return html.Div([
        dcc.Location(id="symbol-url", refresh="callback-nav"),
        dcc.Store(id="symbol-view", data=state),
        html.Div([
            dcc.Dropdown(id="symbol-choice", value=state["symbol"], clearable=False, placeholder="Symbol",
                         options=[state["symbol"]] if state["symbol"] else [], style={"width": "200px"}),
            dcc.RadioItems(id="symbol-interval", value=state["interval"], inline=True,
                           options=[{"label": f" {i}", "value": i} for i in INTERVAL_NAMES],
                           inputStyle={"marginLeft": "10px"}),
            dcc.RadioItems(id="symbol-range", value=state["range"], inline=True,
                           options=[{"label": f" {r}", "value": r} for r in RANGES[state["interval"]]],
                           inputStyle={"marginLeft": "10px"}),
            html.Span(id="symbol-status", className="muted"),
        ], className="controls"),
        html.Div([
            html.Div(id="prediction", className="card", children=prediction_card(state["symbol"], None)),
            html.Div(dcc.Graph(id=CHART_ID, config={"displaylogo": False, "responsive": True}), className="chart"),
        ], className="main"),
        html.Div([
            html.Div([html.H4("Signals against what happened"), html.Div(id="signal-history")],
                     className="section", style={"flex": "1 1 420px"}),
            html.Div([html.H4("What drives this prediction"), html.Div(id="drivers")],
                     className="section", style={"flex": "1 1 420px"}),
        ], className="main"),
        dcc.Interval(id="symbol-refresh", interval=int(data.settings.dashboard_refresh_seconds * 1000)),
        # Explanations run the models: a slower beat.
        dcc.Interval(id="drivers-refresh", interval=60_000),
    ])


def history_table(found: list[Any]) -> Any:
    from dash import html

    if not found:
        return html.P("No past predictions at this interval yet.", className="muted", id="signal-history-none")
    scored = [o for o in found if o.hit is not None]
    hits = sum(o.hit for o in scored)
    summary = (f"{hits} of {len(scored)} directional signals right ({hits / len(scored):.0%})" if scored
               else "no BUY or SELL signal has reached its horizon yet")
    rows = [
        html.Tr([
            html.Td(o.prediction.data_timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M")),
            html.Td(o.prediction.signal),
            html.Td(fmt_pct(o.prediction.predicted_return)),
            html.Td(fmt_pct(o.realised) if o.realised is not None else "pending"),
            html.Td({True: "hit", False: "miss", None: "–"}[o.hit], className=f"outcome-{o.hit}"),
        ])
        for o in reversed(found[-HISTORY_ROWS:])
    ]
    return html.Div([
        html.P(summary, className="muted", id="signal-history-summary"),
        html.Table([html.Thead(html.Tr([html.Th(h) for h in ("Data time (UTC)", "Signal", "Predicted", "Realised",
                                                                 "Outcome")])), html.Tbody(rows)],
                   className="simple", id="signal-history-table"),
    ])


def drivers_table(explained: Any) -> Any:
    from dash import html

    result = explained.explanation
    rows = [
        html.Tr([
            html.Td(a.feature),
            html.Td("–" if a.value is None or not math.isfinite(a.value) else f"{a.value:,.4g}"),
            html.Td(f"{a.baseline:,.4g}"),
            html.Td(a.direction),
            html.Td(fmt_pct(a.expected_return)),
        ])
        for a in result.attributions
    ]
    return html.Div([
        html.P(result.text, id="drivers-text"),
        html.P(f"{explained.model_name} v{explained.model_version} · {result.method} · expected return "
               f"{fmt_pct(result.expected_return)}", className="muted"),
        html.Table([html.Thead(html.Tr([html.Th(h) for h in ("Feature", "Now", "Usual", "Pushes", "Effect")])),
                    html.Tbody(rows)], className="simple", id="drivers-table"),
    ])


def register(app: dash.Dash, data: DashboardData) -> None:
    from dash import Input, Output, State, html, no_update

    @app.callback(
        Output("symbol-choice", "options"),
        Input("symbol-view", "data"),
    )
    async def symbol_options(state: dict):
        statuses = await asyncio.to_thread(data.market.symbols)
        found = [s.symbol for s in statuses]
        if state.get("symbol") and state["symbol"] not in found:
            found.insert(0, state["symbol"])
        return found

    @app.callback(
        Output("symbol-url", "href"),
        Input("symbol-choice", "value"),
        Input("symbol-interval", "value"),
        Input("symbol-range", "value"),
        State("symbol-view", "data"),
        prevent_initial_call=True,
    )
    def navigate(symbol: str | None, interval: str, range_: str, state: dict):
        if interval != state.get("interval"):
            range_ = DEFAULT_RANGE.get(interval, range_)
        wanted = view(symbol, interval, range_)
        if wanted == state or not wanted["symbol"]:
            return no_update
        return f"/symbol/{wanted['symbol']}?{urlencode({'interval': wanted['interval'], 'range': wanted['range']})}"

    @app.callback(
        Output(CHART_ID, "figure"),
        Output("prediction", "children"),
        Output("signal-history", "children"),
        Output("symbol-status", "children"),
        Input("symbol-refresh", "n_intervals"),
        State("symbol-view", "data"),
    )
    async def refresh(_n: int | None, state: dict):
        symbol, interval = state.get("symbol"), state["interval"]
        if not symbol:
            return candle_figure(None, interval, []), prediction_card(None, None), None, "pick a symbol"
        bars_wanted = RANGES[interval][state["range"]]
        try:
            bars, past, current = await asyncio.gather(
                asyncio.to_thread(data.market.bars.bars, symbol, interval, bars_wanted),
                asyncio.to_thread(data.history, symbol, interval),
                asyncio.to_thread(data.prediction_for, symbol, interval),
            )
        except Exception as exc:  # noqa: BLE001 - shown to the analyst, the page kept as it was
            log.exception("reading %s %s failed", symbol, interval)
            return no_update, no_update, no_update, f"cannot read data right now ({type(exc).__name__}); retrying"
        if bars:
            first = bars[0].window_start
            past = [p for p in past if p.data_timestamp >= first]
        found = outcomes(past, bars, interval)
        status = (f"{len(bars)} bars · last close {fmt_price(bars[-1].close) if bars else '–'} · "
                  f"refreshed {datetime.now(UTC).strftime('%H:%M:%S')} UTC")
        return (candle_figure(symbol, interval, bars, past, current), prediction_card(symbol, current),
                history_table(found), status)

    @app.callback(
        Output("drivers", "children"),
        Input("drivers-refresh", "n_intervals"),
        State("symbol-view", "data"),
    )
    async def drivers(_n: int | None, state: dict):
        from tickcast.core.errors import NotFound

        symbol = state.get("symbol")
        if not symbol:
            return None
        current = await asyncio.to_thread(data.market.latest_prediction, symbol)
        if current is None:
            return html.P("No prediction to explain yet.", className="muted")
        try:
            explained = await asyncio.to_thread(data.scorer().explain, symbol, current.model_name,
                                                current.model_version)
        except NotFound as exc:
            return html.P(str(exc), className="muted", id="drivers-none")
        except Exception as exc:  # noqa: BLE001 - the rest of the page stays useful
            log.exception("explaining %s failed", symbol)
            return html.P(f"cannot explain right now ({type(exc).__name__})", className="muted")
        return drivers_table(explained)
