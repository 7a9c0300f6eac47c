"""The watchlist: every symbol's latest prediction in one virtualised grid (AG Grid), sortable and
filterable, kept current by pushed updates (``dashboard.stream``), with saved watchlists per user.

URL state: ``/?list=NAME&q=TEXT`` (the saved list shown and the quick filter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dashboard.security import current_user
from dashboard.stream import STREAM_PATH
from dashboard.watchlists import WatchlistError

if TYPE_CHECKING:
    import dash

    from dashboard.data import DashboardData

PATH = "/"
NAME = "Watchlist"
TITLE = "Watchlist · TickCast"
GRID_ID = "watchlist"
ALL = "__all__"

# Formatters live in assets/tickcast.js (dashAgGridFunctions): returns as %, prices as prices.
COLUMNS: list[dict[str, Any]] = [
    {"field": "symbol", "headerName": "Symbol", "pinned": "left", "width": 130, "cellRenderer": "SymbolLink",
     "filter": "agTextColumnFilter"},
    {"field": "price", "headerName": "Last", "type": "numericColumn", "width": 110,
     "valueFormatter": {"function": "tcPrice(params.value)"}, "filter": "agNumberColumnFilter"},
    {"field": "change", "headerName": "Change", "type": "numericColumn", "width": 105,
     "valueFormatter": {"function": "tcPct(params.value)"}, "filter": "agNumberColumnFilter",
     "cellClassRules": {"up": "params.value > 0", "down": "params.value < 0"}},
    {"field": "signal", "headerName": "Signal", "width": 95, "filter": "agTextColumnFilter",
     "cellClassRules": {"signal-buy": "params.value === 'BUY'", "signal-sell": "params.value === 'SELL'"}},
    {"field": "confidence", "headerName": "Confidence", "type": "numericColumn", "width": 120,
     "valueFormatter": {"function": "tcPct0(params.value)"}, "filter": "agNumberColumnFilter"},
    {"field": "predicted_return", "headerName": "Predicted return", "type": "numericColumn", "width": 150,
     "valueFormatter": {"function": "tcPct(params.value)"}, "filter": "agNumberColumnFilter"},
    {"field": "p10", "headerName": "p10", "type": "numericColumn", "width": 95,
     "valueFormatter": {"function": "tcPct(params.value)"}, "filter": "agNumberColumnFilter"},
    {"field": "p90", "headerName": "p90", "type": "numericColumn", "width": 95,
     "valueFormatter": {"function": "tcPct(params.value)"}, "filter": "agNumberColumnFilter"},
    {"field": "p10_price", "headerName": "p10 price", "type": "numericColumn", "width": 110,
     "valueFormatter": {"function": "tcPrice(params.value)"}},
    {"field": "p90_price", "headerName": "p90 price", "type": "numericColumn", "width": 110,
     "valueFormatter": {"function": "tcPrice(params.value)"}},
    {"field": "model", "headerName": "Model", "width": 170, "filter": "agTextColumnFilter"},
    {"field": "route", "headerName": "Route", "width": 100, "filter": "agTextColumnFilter"},
    {"field": "horizon", "headerName": "Horizon", "width": 95},
    {"field": "data_timestamp", "headerName": "Data time", "width": 165},
    # As text: a boolean column would be drawn as a checkbox and skip the formatter.
    {"field": "stale", "headerName": "Fresh", "width": 95, "cellDataType": "text",
     "valueFormatter": {"function": "tcStale(params.value)"},
     "cellClassRules": {"stale": "params.value === true"}},
]


def layout(data: DashboardData, list: str | None = None, q: str | None = None, **_: Any) -> Any:  # noqa: A002
    import dash_ag_grid as dag
    from dash import dcc, html

    username = current_user.get()
    names = data.watchlists.names(username) if username else []
    chosen = list if list in names else ALL
    return html.Div([
        dcc.Location(id="watchlist-url", refresh=False),
        html.Div([
            dcc.Dropdown(id="watchlist-choice", clearable=False, value=chosen, style={"width": "220px"},
                         options=[{"label": "All symbols", "value": ALL}, *({"label": n, "value": n} for n in names)]),
            dcc.Input(id="watchlist-filter", type="search", placeholder="Filter…", value=q or "", debounce=0.3,
                      style={"width": "180px"}),
            dcc.Input(id="watchlist-name", type="text", placeholder="Save selection as…", maxLength=40,
                      style={"width": "180px"}),
            html.Button("Save", id="watchlist-save", n_clicks=0),
            html.Button("Delete list", id="watchlist-delete", n_clicks=0),
            html.Span(id="watchlist-status", className="muted"),
        ], className="controls"),
        # The browser's script (assets/tickcast.js) reads these to follow the stream.
        html.Div(id="watchlist-live", **{"data-stream": STREAM_PATH, "data-grid": GRID_ID,
                                         "data-list": chosen}, style={"display": "none"}),
        dag.AgGrid(
            id=GRID_ID,
            columnDefs=COLUMNS,
            rowData=[],
            getRowId="params.data.symbol",
            defaultColDef={"sortable": True, "resizable": True, "filter": True, "floatingFilter": False},
            rowClassRules={"stale-row": "params.data.stale === true"},
            dashGridOptions={"rowSelection": {"mode": "multiRow", "checkboxes": True, "headerCheckbox": True,
                                              "selectAll": "filtered", "enableClickSelection": False},
                             # 15 columns: all rendered, rows still virtualised.
                             "suppressColumnVirtualisation": True,
                             "animateRows": False, "quickFilterText": q or ""},
            style={"height": "calc(100vh - 170px)", "minHeight": "360px", "width": "100%"},
            className="ag-theme-alpine",
        ),
    ])


def register(app: dash.Dash, data: DashboardData) -> None:
    from dash import Input, Output, State, ctx, no_update

    @app.callback(
        Output(GRID_ID, "rowData"),
        Input("watchlist-choice", "value"),
    )
    async def load_rows(chosen: str | None):
        username = current_user.get()
        symbols = None
        if chosen and chosen != ALL and username:
            stored = data.watchlists.symbols(username, chosen)
            symbols = set(stored or [])
        return await data.watchlist_rows(symbols)

    @app.callback(
        Output(GRID_ID, "dashGridOptions"),
        Output("watchlist-url", "search"),
        Output("watchlist-live", "data-list"),
        Input("watchlist-filter", "value"),
        Input("watchlist-choice", "value"),
        State(GRID_ID, "dashGridOptions"),
    )
    def filter_rows(text: str | None, chosen: str | None, options: dict | None):
        from urllib.parse import urlencode

        query = {k: v for k, v in (("list", chosen if chosen != ALL else None), ("q", text or None)) if v}
        return ({**(options or {}), "quickFilterText": text or ""}, f"?{urlencode(query)}" if query else "",
                chosen or ALL)

    @app.callback(
        Output("watchlist-choice", "options"),
        Output("watchlist-choice", "value"),
        Output("watchlist-status", "children"),
        Input("watchlist-save", "n_clicks"),
        Input("watchlist-delete", "n_clicks"),
        State("watchlist-name", "value"),
        State("watchlist-choice", "value"),
        State(GRID_ID, "selectedRows"),
        prevent_initial_call=True,
    )
    def save_or_delete(_save: int, _delete: int, name: str | None, chosen: str | None, selected: list | None):
        username = current_user.get()
        if not username:
            return no_update, no_update, "sign in again"
        value, status = chosen, ""
        if ctx.triggered_id == "watchlist-save":
            try:
                stored = data.watchlists.save(username, name or "", [r["symbol"] for r in selected or []])
            except WatchlistError as exc:
                return no_update, no_update, str(exc)
            value, status = name.strip(), f"saved {name.strip()!r}: {len(stored):,} symbols"
        else:
            if not chosen or chosen == ALL:
                return no_update, no_update, "pick a saved list to delete"
            data.watchlists.delete(username, chosen)
            value, status = ALL, f"deleted {chosen!r}"
        names = data.watchlists.names(username)
        return ([{"label": "All symbols", "value": ALL}, *({"label": n, "value": n} for n in names)], value, status)
