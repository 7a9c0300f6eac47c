"""Data quality: the records the platform refused (Delta ``quarantine``) per reason over time, the
newest results of the Great Expectations gate per table (Delta ``quality_results``), and the GX
data docs, served by the dashboard itself at ``/quality/docs``.

Read through the catalog (``tickcast.catalog.quarantine``) and the quality package
(``tickcast.quality.summary``, ``tickcast.quality.docs``), as ``tickcast quality`` reads them.

URL state: ``/quality?range=24h|7d|30d`` (how far back the quarantine chart and totals reach).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dash
    import plotly.graph_objects as go

    from dashboard.data import DashboardData
    from tickcast.catalog.quarantine import QuarantineCount
    from tickcast.core.settings import Settings
    from tickcast.quality.summary import LatestRun

log = logging.getLogger("tickcast.dashboard.quality")

PATH = "/quality"
NAME = "Data quality"
TITLE = "Data quality · TickCast"
CHART_ID = "quality-quarantine"
DOCS_URL = "/quality/docs/index.html"
DOCS_COMMAND = "tickcast quality --docs"
# The quarantine read scans up to 30 days of rows: a slower beat than the prices'.
REFRESH_SECONDS = 30
CHART_HEIGHT = 440  # px


@dataclass(frozen=True)
class Range:
    span: timedelta
    bucket: str  # "hour" or "day" (tickcast.catalog.quarantine.BUCKETS)
    label: str


RANGES: dict[str, Range] = {
    "24h": Range(timedelta(hours=24), "hour", "last 24 hours"),
    "7d": Range(timedelta(days=7), "hour", "last 7 days"),
    "30d": Range(timedelta(days=30), "day", "last 30 days"),
}
DEFAULT_RANGE = "24h"
BUCKET_LENGTH = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def chosen_range(name: str | None) -> str:
    return name if name in RANGES else DEFAULT_RANGE


@dataclass(frozen=True)
class Window:
    """Whole buckets: from ``since`` (the start of the oldest) to ``until`` (the end of the
    current one), UTC."""

    since: datetime
    until: datetime
    bucket: str
    label: str


def window(range_name: str, now: datetime) -> Window:
    chosen = RANGES[chosen_range(range_name)]
    length = BUCKET_LENGTH[chosen.bucket]
    now = now.astimezone(UTC)
    current = now.replace(minute=0, second=0, microsecond=0)
    if chosen.bucket == "day":
        current = current.replace(hour=0)
    buckets = int(chosen.span / length)
    return Window(current - length * (buckets - 1), current + length, chosen.bucket, chosen.label)


def _naive(value: datetime) -> datetime:
    # plotly.js has no time zones: naive UTC, and the axis says so.
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


# -- quarantine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonTotal:
    reason: str
    records: int
    share: float  # of every record quarantined in the range, as a fraction
    stages: tuple[str, ...]


def totals_by_reason(counts: list[QuarantineCount]) -> list[ReasonTotal]:
    """Records per reason over ``counts`` (every bucket and stage), most first."""
    records: dict[str, int] = {}
    stages: dict[str, set[str]] = {}
    for c in counts:
        records[c.reason] = records.get(c.reason, 0) + c.records
        stages.setdefault(c.reason, set()).add(c.stage)
    total = sum(records.values())
    found = [ReasonTotal(reason, n, n / total, tuple(sorted(s for s in stages[reason] if s)))
             for reason, n in records.items()]
    found.sort(key=lambda t: (-t.records, t.reason))
    return found


def quarantine_figure(counts: list[QuarantineCount] | None, view: Window) -> go.Figure:
    """Quarantined records per bucket, one stacked bar per reason (the most frequent at the
    bottom), over the whole window."""
    import plotly.graph_objects as go

    fig = go.Figure()
    per_reason: dict[str, dict[datetime, int]] = {}
    for c in counts or []:
        by_bucket = per_reason.setdefault(c.reason, {})
        by_bucket[c.bucket] = by_bucket.get(c.bucket, 0) + c.records
    for total in totals_by_reason(counts or []):
        points = sorted(per_reason[total.reason].items())
        fig.add_trace(go.Bar(
            x=[_naive(b) for b, _ in points], y=[n for _, n in points], name=total.reason,
            hovertemplate=f"{total.reason}<br>%{{x}} UTC<br>%{{y:,}} records<extra></extra>",
        ))
    unit = view.bucket
    fig.update_layout(
        title=f"Quarantined records per {unit}, {view.label}", template="plotly_white", barmode="stack",
        # The legend (long expectation names) below the axis title, inside the figure's own margin.
        height=CHART_HEIGHT, margin={"l": 60, "r": 20, "t": 50, "b": 130}, showlegend=bool(fig.data),
        legend={"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top"},
        xaxis={"title": {"text": "time (UTC)"}, "range": [_naive(view.since), _naive(view.until)]},
        yaxis={"title": {"text": f"records per {unit}"}, "rangemode": "tozero"},
    )
    if not fig.data:
        text = ("No quarantine table yet: nothing has been refused since the platform was set up"
                if counts is None else f"Nothing quarantined in the {view.label}")
        fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 15, "color": "#656d76"})
        fig.update_yaxes(range=[0, 1], showticklabels=False)
    return fig


def totals_table(counts: list[QuarantineCount] | None, view: Window) -> Any:
    from dash import html

    if counts is None:
        return html.P("No quarantine table yet: nothing has been refused since the platform was set up.",
                      className="muted", id="quality-reasons-none")
    totals = totals_by_reason(counts)
    if not totals:
        return html.P(f"Nothing quarantined in the {view.label}.", className="muted", id="quality-reasons-none")
    rows = [
        html.Tr([html.Td(t.reason), html.Td(", ".join(t.stages) or "–"), html.Td(f"{t.records:,}"),
                 html.Td(f"{t.share:.1%}")])
        for t in totals
    ]
    rows.append(html.Tr([html.Th("Total"), html.Th(""), html.Th(f"{sum(t.records for t in totals):,}"),
                         html.Th("100.0%")]))
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("Reason", "Refused at stage", "Records", "Share of records")])),
        html.Tbody(rows),
    ], className="simple", id="quality-reasons-table")


# -- expectation results ---------------------------------------------------------------------


def fmt_ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def observed(rows_failed: int, rows_checked: int) -> str:
    """What a failed expectation saw: its failing rows out of those checked."""
    share = f" ({rows_failed / rows_checked:.2%})" if rows_checked else ""
    return f"{rows_failed:,} of {rows_checked:,} rows failed{share}"


def runs_table(runs: list[LatestRun] | None) -> Any:
    from dash import html

    if runs is None:
        return html.P("No expectation results yet: the stream and the batch jobs record them in Delta "
                      "quality_results as they validate ticks, bars and features.",
                      className="muted", id="quality-runs-none")
    if not runs:
        return html.P("No expectation results recorded yet.", className="muted", id="quality-runs-none")
    header = ("Table", "Suite", "Layer", "Validated", "Rows checked", "Rows failed", "Expectations passed",
              "Failed", "Errored")
    rows = [
        html.Tr([html.Td(r.table), html.Td(r.suite), html.Td(r.layer), html.Td(fmt_ts(r.validated_at)),
                 html.Td(f"{r.rows_checked:,}"), html.Td(f"{r.rows_failed:,}"),
                 html.Td(f"{len(r.passed)} of {len(r.expectations)}"), html.Td(str(len(r.failed))),
                 html.Td(str(len(r.errored)))],
                className="run-failed" if r.failed or r.errored else "run-passed")
        for r in runs
    ]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)],
                      className="simple", id="quality-runs-table")


def failures_table(runs: list[LatestRun] | None) -> Any:
    """Each failed (or unevaluated) expectation of the newest runs, with what it observed."""
    from dash import html

    if not runs:
        return None
    rows = [
        html.Tr([html.Td(r.table), html.Td(r.suite), html.Td(r.layer), html.Td(e.expectation),
                 html.Td("could not be evaluated (the job's log says why); its rows were let through"
                         if e.errored else observed(e.rows_failed, e.rows_checked))])
        for r in runs for e in [*r.failed, *r.errored]
    ]
    if not rows:
        return html.P("Every expectation passed in the newest run of every table.", className="muted",
                      id="quality-failures-none")
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("Table", "Suite", "Layer", "Failed expectation", "Observed")])),
        html.Tbody(rows),
    ], className="simple", id="quality-failures-table")


# -- data docs -------------------------------------------------------------------------------


def docs_built_at(settings: Settings) -> datetime | None:
    """When the data docs site was last built; None while it never was."""
    from tickcast.quality.docs import index_path

    index = index_path(settings)
    return datetime.fromtimestamp(index.stat().st_mtime, UTC) if index.is_file() else None


def docs_status(built_at: datetime | None) -> Any:
    from dash import html

    if built_at is None:
        return html.P([
            "The data docs have not been built yet. The stream publishes them as it validates; to build "
            "them now from the stored results, run ", html.Code(DOCS_COMMAND), ".",
        ], id="quality-docs-none")
    return html.P([
        html.A("Open the Great Expectations data docs", href=DOCS_URL, id="quality-docs-link", target="_blank"),
        html.Span(f" · built {fmt_ts(built_at)}", className="muted"),
    ])


# -- the page --------------------------------------------------------------------------------


def layout(data: DashboardData, range: str | None = None, **_: Any) -> Any:  # noqa: A002 - the URL's parameter
    from dash import dcc, html

    chosen = chosen_range(range)
    return html.Div([
        dcc.Location(id="quality-url", refresh=False),
        html.Div([
            html.Span("Quarantine over the", className="muted"),
            dcc.RadioItems(id="quality-range", value=chosen, inline=True,
                           options=[{"label": f" {RANGES[r].label}", "value": r} for r in RANGES],
                           inputStyle={"marginLeft": "10px"}),
            html.Span(id="quality-status", className="muted"),
        ], className="controls"),
        # As tall as its figure: the sections below must not slide under the legend.
        dcc.Graph(id=CHART_ID, config={"displaylogo": False, "responsive": True},
                  style={"height": f"{CHART_HEIGHT}px"}),
        html.Div([html.H4("Quarantined records by reason", id="quality-reasons-title"),
                  html.Div(id="quality-reasons")], className="section"),
        html.Div([html.H4("Newest expectation results per table"), html.Div(id="quality-runs"),
                  html.Div(id="quality-failures", style={"marginTop": "12px"})], className="section"),
        html.Div([html.H4("Data docs"), html.Div(id="quality-docs")], className="section"),
        dcc.Interval(id="quality-refresh", interval=REFRESH_SECONDS * 1000),
    ])


def _unreadable(what: str, exc: BaseException) -> Any:
    from dash import html

    log.error("reading %s failed", what, exc_info=exc)
    return html.P(f"Cannot read {what} right now ({type(exc).__name__}); retrying every {REFRESH_SECONDS} s.",
                  className="muted error", id=f"quality-error-{what.rsplit(' ', 1)[-1]}")


async def page_contents(settings: Settings, range_name: str | None, now: datetime) -> tuple[Any, ...]:
    """Everything the page shows for this range at ``now``: the figure, the totals' title and
    table, the runs and their failures, the docs link and the status line. Each source is read
    in a worker thread; one that cannot be read says so in its own section."""
    from tickcast.catalog import quarantine
    from tickcast.quality import summary

    view = window(chosen_range(range_name), now)
    counts, runs, built_at = await asyncio.gather(
        asyncio.to_thread(quarantine.quarantine_counts, settings, view.since, view.bucket),
        asyncio.to_thread(summary.read_latest_runs, settings),
        asyncio.to_thread(docs_built_at, settings),
        return_exceptions=True,
    )
    title = f"Quarantined records by reason, {view.label}"
    if isinstance(counts, BaseException):
        figure = quarantine_figure([], view)
        figure.layout.annotations[0].text = "The quarantine cannot be read right now"
        reasons = _unreadable("the quarantine", counts)
    else:
        figure, reasons = quarantine_figure(counts, view), totals_table(counts, view)
    if isinstance(runs, BaseException):
        runs_shown, failures = _unreadable("the expectation results", runs), None
    else:
        runs_shown, failures = runs_table(runs), failures_table(runs)
    docs = _unreadable("the data docs", built_at) if isinstance(built_at, BaseException) else docs_status(built_at)
    return figure, title, reasons, runs_shown, failures, docs, f"refreshed {now.strftime('%H:%M:%S')} UTC"


def register(app: dash.Dash, data: DashboardData) -> None:
    from dash import Input, Output

    @app.callback(
        Output("quality-url", "search"),
        Input("quality-range", "value"),
    )
    def keep_range(range_name: str | None):
        return f"?range={chosen_range(range_name)}"

    @app.callback(
        Output(CHART_ID, "figure"),
        Output("quality-reasons-title", "children"),
        Output("quality-reasons", "children"),
        Output("quality-runs", "children"),
        Output("quality-failures", "children"),
        Output("quality-docs", "children"),
        Output("quality-status", "children"),
        Input("quality-refresh", "n_intervals"),
        Input("quality-range", "value"),
    )
    async def refresh(_n: int | None, range_name: str | None):
        return await page_contents(data.settings, range_name, datetime.now(UTC))
