"""Pipeline: each streaming query's input and processing rate, batch duration and lag, and the live
scorer's cycle time, over time; and the recent runs of each Airflow DAG.

The charts come from Prometheus (``tickcast.platform.prometheus``: its HTTP API's range queries),
which scrapes the pipeline exporter (``tickcast.platform.exporter``: the streaming progress files
as metrics, the numbers `tickcast status` shows). The DAG runs come from Airflow's REST API
(``tickcast.platform.airflow.AirflowApi``).

URL state: ``/pipeline?range=1h|6h|24h``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from dashboard.components import fmt_age
from tickcast.platform.panels import CHARTS, Chart

if TYPE_CHECKING:
    import dash
    import plotly.graph_objects as go

    from dashboard.data import DashboardData
    from tickcast.core.settings import Settings
    from tickcast.platform.airflow import AirflowApi, DagRun
    from tickcast.platform.prometheus import PrometheusClient, Series

log = logging.getLogger("tickcast.dashboard.pipeline")

PATH = "/pipeline"
NAME = "Pipeline"
TITLE = "Pipeline · TickCast"
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}
DEFAULT_RANGE = "1h"
# Points per series at most: the step is the range over this, and never under the scrape interval.
POINTS = 240
RUNS_PER_DAG = 5
# Airflow's runs change at most every few minutes: a slower beat than the charts'.
DAG_RUNS_REFRESH_SECONDS = 30


# The charts' PromQL is shared with the Grafana dashboard of infra/grafana/ (one definition).
NOTES = {chart.id: chart.description for chart in CHARTS}


def view(range_: str | None) -> dict[str, str]:
    """The page's state from the URL, the default for anything missing or unknown."""
    return {"range": range_ if range_ in RANGES else DEFAULT_RANGE}


def step_seconds(range_: str, scrape_seconds: float) -> int:
    return max(int(RANGES[range_] / POINTS), int(scrape_seconds + 0.999))


def window_seconds(step: int, scrape_seconds: float) -> int:
    """Each point's look-back: its step, and at least two scrapes so that a point is never empty
    only because no scrape fell inside it."""
    return max(step, int(2 * scrape_seconds + 0.999))


def series_name(series: Series, labels: tuple[str, ...]) -> str:
    parts = [series.labels[label] for label in labels if series.labels.get(label)]
    return " · ".join(parts) or series.labels.get("__name__", "series")


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"


def _naive(value: datetime) -> datetime:
    # plotly.js has no time zones: naive UTC, and the axis says so.
    return value.astimezone(UTC).replace(tzinfo=None)


def chart_figure(chart: Chart, series: list[Series] | None, start: datetime, end: datetime,
                 message: str | None = None) -> go.Figure:
    """The chart's figure over [start, end]; without points, an empty chart saying ``message``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    drawn = [s for s in series or [] if s.times]
    for s in sorted(drawn, key=lambda s: series_name(s, chart.labels)):
        fig.add_trace(go.Scatter(
            x=[_naive(t) for t in s.times], y=s.values, mode="lines+markers" if len(s.times) < 3 else "lines",
            name=series_name(s, chart.labels),
            customdata=[fmt_value(v, chart.unit) for v in s.values],
            hovertemplate="%{customdata}<extra>%{fullData.name}</extra>",
        ))
    if not drawn:
        fig.add_annotation(text=message or "No data", x=0.5, y=0.5, xref="paper", yref="paper",
                           showarrow=False, font={"size": 14, "color": "#656d76"})
    fig.update_layout(
        title=f"{chart.title} ({chart.unit})", template="plotly_white", height=300,
        margin={"l": 60, "r": 20, "t": 50, "b": 40}, showlegend=bool(drawn),
        legend={"orientation": "h", "y": -0.25},
        uirevision=chart.id,
    )
    fig.update_xaxes(title_text="time (UTC)", range=[_naive(start), _naive(end)])
    fig.update_yaxes(title_text=chart.unit, rangemode="tozero")
    return fig


# Whether Prometheus scrapes the exporter: the job name of the scrape config `tickcast up` writes.
EXPORTER_UP = 'up{job="pipeline"}'


def scrape_problem(up: list[Series] | None, scrape_seconds: float) -> str | None:
    """Why Prometheus holds nothing of the exporter's, from its ``up`` series; None when its last
    scrape worked (or when that is unknown)."""
    if up is None:
        return None
    latest = [s.values[-1] for s in up if s.values]
    if not latest:
        return (f"Prometheus has not scraped the pipeline exporter yet (program `metrics`; it scrapes every "
                f"{scrape_seconds:g} s)")
    if max(latest) < 1:
        return ("Prometheus cannot reach the pipeline exporter (program `metrics`: `tickcast status` shows whether "
                "it runs)")
    return None


# Why a chart is empty when Prometheus does scrape the exporter.
NOTHING_REPORTED = {
    "pipeline-scorer-cycle": "the live scorer reported no cycle in that time",
    "pipeline-kafka-lag": "no query reading Kafka reported progress in that time, or the exporter could not read "
                          "the topics' offsets",
    "pipeline-delta-lag": "no query reading a Delta table as a stream (the bars query) reported progress in that "
                          "time, or the table's version could not be read",
}


def empty_message(range_: str, problem: str | None = None, chart_id: str | None = None) -> str:
    return f"No data in the last {range_}: " + (problem or NOTHING_REPORTED.get(
        chart_id or "", "no query reported progress in that time (a query appears once it has run a batch)"))


def chart_note(chart: Chart, series: list[Series] | None, error: str | None, range_: str,
               problem: str | None = None) -> str:
    """The line under a chart's title: what it shows, or why it is empty."""
    if error:
        return f"No data: {error}"
    if not any(s.times for s in series or []):
        return empty_message(range_, problem, chart.id)
    latest = {series_name(s, chart.labels): s.values[-1] for s in series or [] if s.values}
    now = ", ".join(f"{name} {fmt_value(v, chart.unit)}" for name, v in sorted(latest.items()))
    return f"{NOTES[chart.id]} Latest: {now}."


def unavailable_message(exc: Exception, url: str) -> str:
    from tickcast.platform.prometheus import PrometheusUnavailable

    if isinstance(exc, PrometheusUnavailable):
        return (f"Prometheus at {url} is not answering. The platform runs it as program `prometheus` "
                "(`tickcast status` shows it; `make up` starts it).")
    return str(exc)


def _fmt_time(value: datetime | None) -> str:
    return "–" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def run_duration(run: DagRun, now: datetime) -> str:
    if run.duration_seconds is not None:
        return fmt_age(run.duration_seconds)
    if run.start_date is not None and run.end_date is None:
        return f"running for {fmt_age((now - run.start_date).total_seconds())}"
    return "–"


def dag_runs_table(runs: dict[str, list[DagRun]], now: datetime) -> Any:
    """Each DAG's recent runs, newest first; a DAG that never ran says so."""
    from dash import html

    if not runs:
        return html.P("Airflow reports no TickCast DAG yet (its dag-processor parses airflow/dags first).",
                      className="muted", id="pipeline-dag-runs-none")
    rows = []
    for dag_id, found in sorted(runs.items()):
        if not found:
            rows.append(html.Tr([html.Td(dag_id), html.Td("no runs yet", colSpan=5, className="muted")]))
        for run in found:
            rows.append(html.Tr([
                html.Td(dag_id), html.Td(run.run_id), html.Td(run.run_type),
                html.Td(run.state, className=f"dag-state-{run.state}"),
                html.Td(_fmt_time(run.start_date)), html.Td(run_duration(run, now)),
            ]))
    header = ("DAG", "Run", "Type", "State", "Started (UTC)", "Duration")
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)], className="simple",
                      id="pipeline-dag-runs-table")


def layout(data: DashboardData, range: str | None = None, **_: Any) -> Any:  # noqa: A002 - the URL's parameter
    from dash import dcc, html

    state = view(range)
    settings = data.settings
    charts = [
        html.Div([
            html.P(NOTES[chart.id], className="muted", id=f"{chart.id}-note"),
            # A responsive graph takes its container's height: without one, a row of charts that
            # loaded before its neighbours collapsed to a sliver.
            dcc.Graph(id=chart.id, figure=chart_figure(chart, None, *_span(state["range"]), "Loading…"),
                      config={"displaylogo": False, "responsive": True}, style={"height": "300px"}),
        ], className="chart")
        for chart in CHARTS
    ]
    return html.Div([
        dcc.Location(id="pipeline-url", refresh="callback-nav"),
        dcc.Store(id="pipeline-view", data=state),
        html.Div([
            dcc.RadioItems(id="pipeline-range", value=state["range"], inline=True,
                           options=[{"label": f" {r}", "value": r} for r in RANGES],
                           inputStyle={"marginLeft": "10px"}),
            html.Span(id="pipeline-status", className="muted"),
        ], className="controls"),
        html.Div(charts, className="main"),
        html.Div([
            html.H4(f"Airflow DAG runs (the newest {RUNS_PER_DAG} per DAG)"),
            html.Div(id="pipeline-dag-runs", children=html.P("Loading…", className="muted")),
        ], className="section"),
        dcc.Interval(id="pipeline-refresh",
                     interval=int(max(settings.dashboard_refresh_seconds, settings.prometheus_scrape_seconds) * 1000)),
        dcc.Interval(id="pipeline-runs-refresh", interval=DAG_RUNS_REFRESH_SECONDS * 1000),
    ])


def _span(range_: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or datetime.now(UTC)
    return end - timedelta(seconds=RANGES[range_]), end


class _Clients:
    """One Prometheus and one Airflow client per dashboard process, made on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._prometheus: PrometheusClient | None = None
        self._airflow: AirflowApi | None = None

    def prometheus(self) -> PrometheusClient:
        from tickcast.platform.prometheus import PrometheusClient

        with self._lock:
            if self._prometheus is None:
                self._prometheus = PrometheusClient.for_settings(self.settings)
            return self._prometheus

    def airflow(self) -> AirflowApi:
        from tickcast.platform.airflow import AirflowApi

        with self._lock:
            if self._airflow is None:
                self._airflow = AirflowApi(self.settings)
            return self._airflow


async def read_charts(client: PrometheusClient, range_: str, scrape_seconds: float, now: datetime | None = None
                      ) -> tuple[list[Any], list[str], datetime, datetime]:
    """Every chart's figure and note for ``range_``, the queries run side by side."""
    from tickcast.platform.prometheus import PrometheusError

    start, end = _span(range_, now)
    step = step_seconds(range_, scrape_seconds)
    window = window_seconds(step, scrape_seconds)
    *answers, up = await asyncio.gather(
        *(asyncio.to_thread(client.query_range, chart.query(window), start, end, step) for chart in CHARTS),
        asyncio.to_thread(client.query_range, EXPORTER_UP, start, end, step),
        return_exceptions=True,
    )
    problem = scrape_problem(None if isinstance(up, BaseException) else up, scrape_seconds)
    figures, notes = [], []
    for chart, answer in zip(CHARTS, answers, strict=True):
        if isinstance(answer, PrometheusError):
            error: str | None = unavailable_message(answer, client.url)
            series = None
        elif isinstance(answer, BaseException):
            log.error("query for %s failed", chart.id, exc_info=answer)
            error, series = f"cannot read Prometheus right now ({type(answer).__name__})", None
        else:
            error, series = None, answer
        figures.append(chart_figure(chart, series, start, end, error or empty_message(range_, problem, chart.id)))
        notes.append(chart_note(chart, series, error, range_, problem))
    return figures, notes, start, end


def read_dag_runs(settings: Settings, clients: _Clients) -> Any:
    from dash import html

    from tickcast.platform.airflow import AirflowUnavailable

    if not settings.airflow_enabled:
        return html.P("Airflow is off in this configuration (TICKCAST_AIRFLOW_ENABLED=false): the platform runs "
                      "the table maintenance itself and no DAG runs.", className="muted", id="pipeline-dag-runs-none")
    try:
        runs = clients.airflow().recent_runs(RUNS_PER_DAG)
    except AirflowUnavailable as exc:
        return html.P(f"No DAG runs to show: {exc}. The platform runs Airflow as programs airflow-* "
                      "(`tickcast status` shows them).", className="muted", id="pipeline-dag-runs-none")
    return dag_runs_table(runs, datetime.now(UTC))


def register(app: dash.Dash, data: DashboardData) -> None:
    from dash import Input, Output, State, html, no_update

    clients = _Clients(data.settings)

    @app.callback(
        Output("pipeline-url", "href"),
        Input("pipeline-range", "value"),
        State("pipeline-view", "data"),
        prevent_initial_call=True,
    )
    def navigate(range_: str, state: dict):
        wanted = view(range_)
        if wanted == state:
            return no_update
        return f"{PATH}?{urlencode(wanted)}"

    @app.callback(
        *(Output(chart.id, "figure") for chart in CHARTS),
        *(Output(f"{chart.id}-note", "children") for chart in CHARTS),
        Output("pipeline-status", "children"),
        Input("pipeline-refresh", "n_intervals"),
        State("pipeline-view", "data"),
    )
    async def refresh(_n: int | None, state: dict):
        range_ = view(state.get("range"))["range"]
        client = clients.prometheus()
        figures, notes, _start, end = await read_charts(client, range_, data.settings.prometheus_scrape_seconds)
        status = (f"Prometheus {client.url} · last {range_}, one point per "
                  f"{step_seconds(range_, data.settings.prometheus_scrape_seconds)} s · refreshed "
                  f"{end.strftime('%H:%M:%S')} UTC")
        return (*figures, *notes, status)

    @app.callback(
        Output("pipeline-dag-runs", "children"),
        Input("pipeline-runs-refresh", "n_intervals"),
    )
    async def dag_runs(_n: int | None):
        try:
            return await asyncio.to_thread(read_dag_runs, data.settings, clients)
        except Exception as exc:  # noqa: BLE001 - shown as a message; the charts stay useful
            log.exception("reading Airflow's DAG runs failed")
            return html.P(f"Cannot read Airflow's DAG runs right now ({type(exc).__name__}); retrying.",
                          className="muted", id="pipeline-dag-runs-none")
