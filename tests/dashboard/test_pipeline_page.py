"""The Pipeline page: its range queries and figures against the platform's real Prometheus (Debian's
binary with the command and scrape config `tickcast up` gives it) scraping the pipeline exporter's
collector over progress files, its DAG-run table against Airflow's API format (a stand-in), and the
page in Chromium."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dash import html
from pytest_httpserver import HTTPServer

from dashboard.pages import PAGES, pipeline
from tests.platform.pipeline_standins import (
    WATERMARKS,
    airflow_standin,
    bars_progress,
    running_prometheus,
    scorer_progress,
    ticks_progress,
)
from tickcast.catalog.progress import ProgressFile, progress_path
from tickcast.core.settings import Settings
from tickcast.platform import exporter, prometheus
from tickcast.platform.airflow import DagRun
from tickcast.platform.processes import free_port, wait_until
from tickcast.platform.prometheus import PrometheusClient, Series

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
CHARTS = {chart.id: chart for chart in pipeline.CHARTS}


def _ids(component) -> set[str]:
    found = {component.id} if getattr(component, "id", None) else set()
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            found |= _ids(child)
    return found


def _text(component) -> str:
    if component is None or isinstance(component, str | int | float):
        return "" if component is None else str(component)
    children = getattr(component, "children", None)
    return " ".join(_text(c) for c in (children if isinstance(children, list) else [children]))


def _rows(table) -> list[list[str]]:
    body = table.children[1]
    return [[_text(cell) for cell in row.children] for row in body.children]


# --- pure parts ----------------------------------------------------------------------------------


def test_the_page_is_listed_and_its_layout_keeps_the_url_range(settings: Settings) -> None:
    from dashboard.data import DashboardData

    assert [p.__name__.rsplit(".", 1)[-1] for p in PAGES].index("pipeline") == \
        [p.__name__.rsplit(".", 1)[-1] for p in PAGES].index("quality") + 1
    assert (pipeline.PATH, pipeline.NAME) == ("/pipeline", "Pipeline")
    data = DashboardData(settings)
    page = pipeline.layout(data, range="6h")
    assert {*CHARTS, *(f"{c}-note" for c in CHARTS), "pipeline-range", "pipeline-url", "pipeline-view",
            "pipeline-dag-runs", "pipeline-refresh", "pipeline-runs-refresh", "pipeline-status"} <= _ids(page)
    store = next(c for c in page.children if getattr(c, "id", None) == "pipeline-view")
    assert store.data == {"range": "6h"}
    assert pipeline.view("bogus") == pipeline.view(None) == {"range": "1h"}
    # Building the page read nothing and created nothing.
    assert not settings.home_dir.exists()


def test_each_point_covers_its_step_and_at_least_two_scrapes() -> None:
    assert pipeline.step_seconds("1h", 5) == 15
    assert pipeline.step_seconds("24h", 5) == 360
    assert pipeline.step_seconds("1h", 30) == 30  # never finer than the scrapes
    assert pipeline.window_seconds(15, 5) == 15
    assert pipeline.window_seconds(15, 30) == 60
    assert CHARTS["pipeline-input-rate"].query(15) == "avg_over_time(tickcast_stream_input_rows_per_second[15s])"
    assert CHARTS["pipeline-scorer-cycle"].query(60) == \
        'avg_over_time(tickcast_stream_batch_duration_seconds{query="scorer"}[60s])'
    assert CHARTS["pipeline-batch-duration"].query(60) == \
        'avg_over_time(tickcast_stream_batch_duration_seconds{query!="scorer"}[60s])'
    assert CHARTS["pipeline-kafka-lag"].query(60) == "max_over_time(tickcast_stream_kafka_lag_messages[60s])"


def test_a_chart_draws_one_named_line_per_series_over_the_whole_range() -> None:
    chart = CHARTS["pipeline-kafka-lag"]
    times = [NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)]
    series = [Series({"query": "ticks", "topic": "ticks"}, times, [120.0, 35.0]),
              Series({"query": "scorer", "topic": "ticks"}, times, [0.0, 20.0]),
              Series({"query": "bars", "topic": "ticks"}, [], [])]
    fig = pipeline.chart_figure(chart, series, NOW - timedelta(hours=1), NOW)

    assert [t.name for t in fig.data] == ["scorer · ticks", "ticks · ticks"]
    assert list(fig.data[1].y) == [120.0, 35.0]
    assert list(fig.data[1].customdata) == ["120 messages", "35.00 messages"]
    assert fig.layout.title.text == "Kafka lag (messages)" and fig.layout.yaxis.title.text == "messages"
    assert list(fig.layout.xaxis.range) == [datetime(2026, 12, 10, 11, 0), datetime(2026, 12, 10, 12, 0)]
    assert not fig.layout.annotations
    assert pipeline.chart_note(chart, series, None, "1h") == (
        f"{pipeline.NOTES[chart.id]} Latest: scorer · ticks 20.00 messages, ticks · ticks 35.00 messages.")


def test_an_empty_chart_says_why() -> None:
    chart = CHARTS["pipeline-scorer-cycle"]
    fig = pipeline.chart_figure(chart, [], NOW - timedelta(hours=6), NOW, pipeline.empty_message("6h"))
    assert not fig.data
    assert fig.layout.annotations[0].text.startswith("No data in the last 6h")
    assert pipeline.chart_note(chart, [], None, "6h").startswith("No data in the last 6h")
    assert pipeline.chart_note(chart, None, "Prometheus at x is not answering.", "6h") == \
        "No data: Prometheus at x is not answering."
    assert pipeline.chart_note(chart, [], None, "1h") == "No data in the last 1h: the live scorer reported no cycle " \
        "in that time"
    assert pipeline.chart_note(CHARTS["pipeline-input-rate"], [], None, "1h").startswith(
        "No data in the last 1h: no query reported progress in that time")


def test_an_empty_chart_says_whether_prometheus_scrapes_the_exporter() -> None:
    times = [NOW - timedelta(seconds=10), NOW]
    never = pipeline.scrape_problem([], 5)
    assert never == "Prometheus has not scraped the pipeline exporter yet (program `metrics`; it scrapes every 5 s)"
    down = pipeline.scrape_problem([Series({"job": "pipeline"}, times, [1.0, 0.0])], 5)
    assert down is not None and down.startswith("Prometheus cannot reach the pipeline exporter")
    assert pipeline.scrape_problem([Series({"job": "pipeline"}, times, [0.0, 1.0])], 5) is None
    assert pipeline.scrape_problem(None, 5) is None  # unknown: the charts say the rest
    note = pipeline.chart_note(CHARTS["pipeline-kafka-lag"], [], None, "24h", down)
    assert note == f"No data in the last 24h: {down}"


def test_durations_have_their_unit() -> None:
    assert pipeline.fmt_value(0.035, "s") == "35 ms"
    assert pipeline.fmt_value(1.9, "s") == "1.90 s"
    assert pipeline.fmt_value(812.5, "rows/s") == "812 rows/s"
    assert pipeline.fmt_value(3.0, "commits") == "3.00 commits"


def _dag_run(state: str, start: datetime | None, end: datetime | None, duration: float | None) -> DagRun:
    return DagRun("maintenance", f"scheduled__{state}", "scheduled", state, start, start, end, duration)


def test_the_runs_table_has_each_dag_with_state_start_and_duration() -> None:
    runs = {"retrain": [], "maintenance": [
        _dag_run("running", NOW - timedelta(minutes=3), None, None),
        _dag_run("success", NOW - timedelta(minutes=20), NOW - timedelta(minutes=18, seconds=30), 90.0),
        _dag_run("queued", None, None, None),
    ]}
    table = pipeline.dag_runs_table(runs, NOW)
    assert _rows(table) == [
        ["maintenance", "scheduled__running", "scheduled", "running", "2026-12-10 11:57:00", "running for 3.0 min"],
        ["maintenance", "scheduled__success", "scheduled", "success", "2026-12-10 11:40:00", "1.5 min"],
        ["maintenance", "scheduled__queued", "scheduled", "queued", "–", "–"],
        ["retrain", "no runs yet"],
    ]
    assert "no TickCast DAG yet" in _text(pipeline.dag_runs_table({}, NOW))


# --- against Airflow's API format ----------------------------------------------------------------


def test_dag_runs_from_airflows_api(httpserver: HTTPServer, settings: Settings) -> None:
    settings = airflow_standin(httpserver, settings)
    shown = pipeline.read_dag_runs(settings, pipeline._Clients(settings))
    rows = _rows(shown)
    assert [r[:4] for r in rows] == [
        ["maintenance", "scheduled__2026-12-10T11:50:00+00:00", "scheduled", "running"],
        ["maintenance", "scheduled__2026-12-10T11:40:00+00:00", "scheduled", "success"],
        ["maintenance", "scheduled__2026-12-10T11:30:00+00:00", "scheduled", "failed"],
        ["retrain", "no runs yet"],
    ]
    assert rows[1][4:] == ["2026-12-10 11:40:01", "1.5 min"]
    assert rows[2][5] == "45 s"


def test_dag_runs_when_airflow_is_off_or_down(settings: Settings) -> None:
    off = settings.model_copy(update={"airflow_enabled": False})
    message = pipeline.read_dag_runs(off, pipeline._Clients(off))
    assert isinstance(message, html.P) and "Airflow is off" in message.children

    down = settings.model_copy(update={"airflow_port": free_port()})
    down.airflow_dir.mkdir(parents=True)
    (down.airflow_dir / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "pw"}')
    message = pipeline.read_dag_runs(down, pipeline._Clients(down))
    assert "No DAG runs to show" in message.children and "not answering" in message.children


# --- against Prometheus ----------------------------------------------------------------------------


def test_every_chart_says_prometheus_is_not_answering() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}")
    figures, notes, _start, _end = asyncio.run(pipeline.read_charts(client, "1h", 5))
    assert len(figures) == len(notes) == len(pipeline.CHARTS)
    for figure, note in zip(figures, notes, strict=True):
        assert not figure.data
        assert "is not answering" in figure.layout.annotations[0].text
        assert note.startswith(f"No data: Prometheus at {client.url} is not answering")


def _write_progress(settings: Settings) -> None:
    now = datetime.now(UTC)
    ProgressFile(progress_path(settings, "ingest")).record("ticks", ticks_progress(now))
    ProgressFile(progress_path(settings, "bars")).record("bars", bars_progress(now))
    ProgressFile(progress_path(settings, "scorer")).record("scorer", scorer_progress(now))


def _pipeline_registry(settings: Settings):
    # The written progress stays current for the whole test.
    settings = settings.model_copy(update={"alerts_stall_seconds": 3600})
    return exporter.registry_for(settings, watermarks=lambda _s, _topics: WATERMARKS, versions=lambda _s, _t: 15)


EXPECTED_LATEST = {
    "pipeline-input-rate": {"bars": 40.0, "scorer": 80.0, "ticks": 812.5},
    "pipeline-processing-rate": {"bars": 20.0, "scorer": 20.0, "ticks": 1625.0},
    "pipeline-batch-duration": {"bars": 1.9, "ticks": 0.48},
    "pipeline-scorer-cycle": {"scorer": 0.035},
    # ticks: (210 - 180) + (95 - 90); the scorer: (210 - 195) + (95 - 90); bars: 15 - 12 commits.
    "pipeline-kafka-lag": {"scorer · ticks": 20.0, "ticks · ticks": 35.0},
    "pipeline-delta-lag": {"bars · ticks": 3.0},
}


def _matches(seen: dict | None) -> bool:
    """The charts' latest points are the exporter's numbers (Prometheus' means of equal samples
    may differ from them in the last bits)."""
    return bool(seen) and {k: set(v) for k, v in seen.items()} == {k: set(v) for k, v in EXPECTED_LATEST.items()} \
        and all(seen[k][name] == pytest.approx(value) for k, v in EXPECTED_LATEST.items() for name, value in v.items())


def test_charts_from_the_platforms_prometheus(settings: Settings, tmp_path: Path) -> None:
    _write_progress(settings)
    with running_prometheus(settings, _pipeline_registry(settings), tmp_path / "prometheus.log") as settings:
        client = PrometheusClient.for_settings(settings)
        seen: dict[str, dict[str, float]] = {}

        def charted() -> bool:
            figures, _notes, _start, _end = asyncio.run(pipeline.read_charts(client, "1h", 1))
            seen.clear()
            seen.update({chart.id: {t.name: t.y[-1] for t in fig.data} for chart, fig in zip(pipeline.CHARTS, figures,
                                                                                            strict=True)})
            return _matches(seen)

        wait_until(charted, 60, "every chart to show the exporter's numbers", interval=0.5,
                   on_timeout=lambda: f"last seen {seen}")
        _figures, notes, _start, _end = asyncio.run(pipeline.read_charts(client, "1h", 1))
        assert notes[3] == f"{pipeline.NOTES['pipeline-scorer-cycle']} Latest: scorer 35 ms."
        # It scrapes the API too: nothing listens there in this test. Each target has its own
        # scrape schedule, so the API's first scrape may come after the exporter's.
        def api_scraped() -> list:
            return client.query_range('up{job="api"}', datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC), 1)

        wait_until(lambda: bool(api_scraped()), 60, "Prometheus to scrape the API's target", interval=0.5)
        [up] = api_scraped()
        assert set(up.values) == {0.0}


# --- in the browser --------------------------------------------------------------------------------

READ_LATEST = """
const latest = {};
for (const id of arguments[0]) {
  const plot = document.getElementById(id)?.querySelector('.js-plotly-plot');
  if (!plot || !plot.data) { return null; }
  latest[id] = Object.fromEntries(plot.data.map(t => [t.name, t.y[t.y.length - 1]]));
}
return latest;
"""


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_shows_prometheus_series_and_airflow_runs(settings: Settings, tmp_path: Path, browser,
                                                           httpserver: HTTPServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.dashboard.conftest import WAIT, add_analyst, screenshot, serve_dashboard, sign_in

    _write_progress(settings)
    settings = airflow_standin(httpserver, settings)
    add_analyst(settings)
    with running_prometheus(settings, _pipeline_registry(settings), tmp_path / "prometheus.log") as settings:
        served = serve_dashboard(settings, tmp_path, TICKCAST_PROMETHEUS_URL=prometheus.base_url(settings),
                                 TICKCAST_PROMETHEUS_SCRAPE_SECONDS="1", TICKCAST_AIRFLOW_HOST="127.0.0.1",
                                 TICKCAST_AIRFLOW_PORT=str(settings.airflow_port))
        dashboard = next(served)
        try:
            sign_in(browser, dashboard.url, next_path="/pipeline?range=1h")
            wait = WebDriverWait(browser, WAIT, poll_frequency=0.25)
            seen: list = []

            def charted(driver):
                seen[:] = [driver.execute_script(READ_LATEST, list(CHARTS))]
                return _matches(seen[0])

            try:
                wait.until(charted)
            except Exception as exc:
                raise AssertionError(f"charts never showed the exporter's numbers; last seen {seen}") from exc
            runs = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pipeline-dag-runs-table tbody tr"))
            assert [r.text.split(" ")[0] for r in runs] == ["maintenance"] * 3 + ["retrain"]
            assert "success" in runs[1].text and "1.5 min" in runs[1].text and "no runs yet" in runs[3].text
            assert "Latest: scorer 35 ms." in browser.find_element(By.ID, "pipeline-scorer-cycle-note").text
            screenshot(browser, "pipeline")

            # Another range from the control: the URL follows and the status says it.
            browser.find_element(By.CSS_SELECTOR, "#pipeline-range input[value='6h']").click()
            wait.until(lambda d: d.current_url.endswith("/pipeline?range=6h"))
            wait.until(lambda d: "last 6h" in d.find_element(By.ID, "pipeline-status").text)
            wait.until(charted)
        finally:
            served.close()
        assert "Traceback" not in dashboard.log.read_text()
