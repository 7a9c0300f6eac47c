"""The data-quality page: its pure parts (the window of a range, the quarantine chart and totals,
the expectation tables, the docs link), what it shows when a source cannot be read, and the page
in headless Chromium over quarantine rows and gate results planted the way the stream writes
them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from dash import html

from dashboard.pages import quality
from tickcast.catalog import tables
from tickcast.catalog.quarantine import QuarantineCount
from tickcast.core.settings import Settings
from tickcast.quality.summary import LatestRun, RecordedExpectation

NOW = datetime(2026, 1, 5, 15, 42, 10, tzinfo=UTC)
H = timedelta(hours=1)
VOLUME = "expect_column_values_to_be_between(volume)"
CLOSE = "expect_column_values_to_be_between(close)"
CLOSE_LOW = "expect_column_pair_values_a_to_be_greater_than_b(close,low)"


def texts(component) -> str:
    """Every string the component shows, in order."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    children = getattr(component, "children", None)
    children = children if isinstance(children, list | tuple) else [children]
    return "".join(texts(child) for child in children)


def rows_of(component) -> list[list[str]]:
    """The cells of every table row under the component, as text."""
    if isinstance(component, html.Tr):
        return [[texts(cell) for cell in component.children]]
    children = getattr(component, "children", None)
    children = children if isinstance(children, list | tuple) else [children]
    return [row for child in children if child is not None and not isinstance(child, str) for row in rows_of(child)]


# -- the window of each range -----------------------------------------------------------------


def test_each_range_is_whole_buckets_ending_with_the_current_one() -> None:
    hour = NOW.replace(minute=0, second=0)
    day = NOW.replace(hour=0, minute=0, second=0)
    assert quality.window("24h", NOW) == quality.Window(hour - 23 * H, hour + H, "hour", "last 24 hours")
    assert quality.window("7d", NOW) == quality.Window(hour - 167 * H, hour + H, "hour", "last 7 days")
    assert quality.window("30d", NOW) == quality.Window(day - timedelta(days=29), day + timedelta(days=1), "day",
                                                         "last 30 days")
    # Anything else in the URL: the default.
    assert quality.window("1y", NOW) == quality.window("24h", NOW)
    assert quality.chosen_range(None) == "24h"


# -- the quarantine ---------------------------------------------------------------------------

T0 = datetime(2026, 1, 5, 13, tzinfo=UTC)
COUNTS = [
    QuarantineCount(T0, "invalid_price", "ticks", 2),
    QuarantineCount(T0, "late", "ticks", 1),
    QuarantineCount(T0 + H, "invalid_price", "alt_news", 1),
    QuarantineCount(T0 + H, "invalid_price", "ticks", 3),
    QuarantineCount(T0 + 2 * H, f"expectation:{VOLUME}", "bars_1m", 1),
]


def test_totals_by_reason_most_first() -> None:
    assert quality.totals_by_reason(COUNTS) == [
        quality.ReasonTotal("invalid_price", 6, 6 / 8, ("alt_news", "ticks")),
        quality.ReasonTotal(f"expectation:{VOLUME}", 1, 1 / 8, ("bars_1m",)),
        quality.ReasonTotal("late", 1, 1 / 8, ("ticks",)),
    ]
    assert quality.totals_by_reason([]) == []


def test_figure_stacks_one_bar_trace_per_reason_over_the_window() -> None:
    view = quality.window("24h", NOW)
    fig = quality.quarantine_figure(COUNTS, view)
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["invalid_price", f"expectation:{VOLUME}", "late"]
    price = fig.data[0]
    # Stages summed per bucket; naive UTC for plotly, the axis says UTC.
    assert [str(x) for x in price.x] == ["2026-01-05 13:00:00", "2026-01-05 14:00:00"]
    assert list(price.y) == [2, 4]
    assert {t.type for t in fig.data} == {"bar"}
    assert sum(sum(t.y) for t in fig.data) == 8
    assert fig.layout.xaxis.title.text == "time (UTC)"
    assert fig.layout.yaxis.title.text == "records per hour"
    assert fig.layout.title.text == "Quarantined records per hour, last 24 hours"
    assert [str(v) for v in fig.layout.xaxis.range] == ["2026-01-04 16:00:00", "2026-01-05 16:00:00"]
    assert not fig.layout.annotations


def test_figure_and_totals_say_when_there_is_nothing() -> None:
    view = quality.window("7d", NOW)
    empty = quality.quarantine_figure([], view)
    assert not empty.data and empty.layout.annotations[0].text == "Nothing quarantined in the last 7 days"
    missing = quality.quarantine_figure(None, view)
    assert missing.layout.annotations[0].text.startswith("No quarantine table yet")
    assert texts(quality.totals_table([], view)) == "Nothing quarantined in the last 7 days."
    assert texts(quality.totals_table(None, view)).startswith("No quarantine table yet")


def test_totals_table_rows_with_units() -> None:
    table = quality.totals_table(COUNTS, quality.window("24h", NOW))
    assert table.id == "quality-reasons-table"
    assert rows_of(table) == [
        ["Reason", "Refused at stage", "Records", "Share of records"],
        ["invalid_price", "alt_news, ticks", "6", "75.0%"],
        [f"expectation:{VOLUME}", "bars_1m", "1", "12.5%"],
        ["late", "ticks", "1", "12.5%"],
        ["Total", "", "8", "100.0%"],
    ]


# -- expectation results ----------------------------------------------------------------------

RUNS = [
    LatestRun("bars_1m", "bars", "stream", "app:7", NOW, 6, 2, [
        RecordedExpectation(VOLUME, 6, 1, False), RecordedExpectation(CLOSE, 6, 1, False),
        RecordedExpectation("expect_column_values_to_not_be_null(symbol)", 6, 0, True),
        RecordedExpectation("expect_column_values_to_be_between(trades)", 6, 0, False),  # errored
    ]),
    LatestRun("ticks", "ticks", "audit", "app:7", NOW - H, 1200, 0, [
        RecordedExpectation("expect_column_values_to_be_between(price)", 1200, 0, True),
    ]),
]


def test_runs_table_counts_passed_failed_and_errored() -> None:
    assert rows_of(quality.runs_table(RUNS)) == [
        ["Table", "Suite", "Layer", "Validated", "Rows checked", "Rows failed", "Expectations passed", "Failed",
         "Errored"],
        ["bars_1m", "bars", "stream", "2026-01-05 15:42:10 UTC", "6", "2", "1 of 4", "2", "1"],
        ["ticks", "ticks", "audit", "2026-01-05 14:42:10 UTC", "1,200", "0", "1 of 1", "0", "0"],
    ]


def test_failures_table_lists_each_failed_expectation_with_what_it_observed() -> None:
    assert rows_of(quality.failures_table(RUNS))[1:] == [
        ["bars_1m", "bars", "stream", VOLUME, "1 of 6 rows failed (16.67%)"],
        ["bars_1m", "bars", "stream", CLOSE, "1 of 6 rows failed (16.67%)"],
        ["bars_1m", "bars", "stream", "expect_column_values_to_be_between(trades)",
         "could not be evaluated (the job's log says why); its rows were let through"],
    ]
    assert quality.observed(3, 0) == "3 of 0 rows failed"


def test_expectation_tables_empty_states() -> None:
    assert texts(quality.runs_table(None)).startswith("No expectation results yet")
    assert texts(quality.runs_table([])) == "No expectation results recorded yet."
    assert quality.failures_table(None) is None and quality.failures_table([]) is None
    assert texts(quality.failures_table(RUNS[1:])) == "Every expectation passed in the newest run of every table."


# -- the data docs ----------------------------------------------------------------------------


def test_docs_link_or_how_to_build_them(settings: Settings) -> None:
    built = quality.docs_status(NOW)
    link = built.children[0]
    assert link.href == "/quality/docs/index.html" and link.id == "quality-docs-link"
    assert texts(built).endswith("built 2026-01-05 15:42:10 UTC")
    never = quality.docs_status(None)
    assert "have not been built yet" in texts(never) and "tickcast quality --docs" in texts(never)
    assert quality.docs_built_at(settings) is None


# -- the page ---------------------------------------------------------------------------------


def _ids(component) -> set[str]:
    found = {component.id} if getattr(component, "id", None) else set()
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found |= _ids(child)
    return found


def test_registered_in_the_navigation_and_the_layout_keeps_the_url_range(settings: Settings) -> None:
    import dash

    from dashboard.app import create_app
    from dashboard.data import DashboardData

    app = create_app(settings)
    registered = dash.page_registry["dashboard.pages.quality"]
    assert (registered["path"], registered["name"]) == ("/quality", "Data quality")
    assert "nav-quality" in _ids(app.layout)

    data = DashboardData(settings)
    page = quality.layout(data, range="30d")
    assert {quality.CHART_ID, "quality-range", "quality-reasons", "quality-runs", "quality-failures",
            "quality-docs", "quality-url", "quality-refresh"} <= _ids(page)

    def chosen(component) -> str:
        controls = component.children[1].children
        return next(c for c in controls if getattr(c, "id", None) == "quality-range").value

    assert chosen(page) == "30d"
    assert chosen(quality.layout(data, range="bogus")) == "24h"
    # Building the app and the page read nothing and created nothing.
    assert not (settings.home_dir / "delta").exists()


def test_a_source_that_cannot_be_read_says_so_and_the_rest_still_shows(settings: Settings) -> None:
    # A quarantine table whose log is not Delta: the read fails inside delta-rs.
    log_dir = Path(tables.table_path(settings, tables.QUARANTINE)) / "_delta_log"
    log_dir.mkdir(parents=True)
    (log_dir / "00000000000000000000.json").write_text("this is not a Delta commit\n")
    figure, title, reasons, runs, failures, docs, status = asyncio.run(
        quality.page_contents(settings, "7d", NOW))
    assert figure.layout.annotations[0].text == "The quarantine cannot be read right now"
    assert reasons.id == "quality-error-quarantine"
    assert texts(reasons).startswith("Cannot read the quarantine right now (")
    assert "Traceback" not in texts(reasons)
    assert title == "Quarantined records by reason, last 7 days"
    assert texts(runs).startswith("No expectation results yet") and failures is None
    assert "have not been built yet" in texts(docs)
    assert status == "refreshed 15:42:10 UTC"


def test_page_contents_over_an_empty_home(settings: Settings) -> None:
    figure, _title, reasons, runs, _failures, docs, _status = asyncio.run(
        quality.page_contents(settings, None, NOW))
    assert figure.layout.annotations[0].text.startswith("No quarantine table yet")
    assert texts(reasons).startswith("No quarantine table yet")
    assert texts(runs).startswith("No expectation results yet")
    assert not settings.home_dir.exists()


# -- in the browser ---------------------------------------------------------------------------

READ_BARS = f"""
const plot = document.querySelector('#{quality.CHART_ID} .js-plotly-plot');
if (!plot || !plot.data) {{ return null; }}
return plot.data.map(t => ({{name: t.name, y: Array.from(t.y)}}));
"""


READ_TABLE = """
const table = document.getElementById(arguments[0]);
if (!table) { return null; }
return Array.from(table.querySelectorAll('tr')).map(r => Array.from(r.querySelectorAll('td, th')).map(c => c.innerText.trim()));
"""


def _table(driver, table_id: str) -> list[list[str]] | None:
    # Read in one script: the page re-renders its tables on every refresh.
    return driver.execute_script(READ_TABLE, table_id)


def _refused_ticks(settings: Settings, now: datetime) -> dict[str, tuple[int, timedelta]]:
    """Tick-rule refusals at earlier hours, through the catalog's writer without a JVM."""
    planted = {"invalid_price": (3, 3 * H), "late": (2, 30 * H), "duplicate_msg_id": (1, timedelta(days=10))}
    rows = [
        {"reason": reason, "stage": "ticks", "raw": "{}", "msg_id": f"{reason}-{i}", "symbol": "AAPL",
         "ts": now - ago, "source": "synthetic", "kafka_topic": "ticks", "kafka_partition": 0, "kafka_offset": i,
         "ingest_batch": "page-test:0", "quarantined_at": now - ago}
        for reason, (n, ago) in planted.items() for i in range(n)
    ]
    tables.append_arrow(settings, tables.QUARANTINE,
                        pa.Table.from_pylist(rows, schema=tables.arrow_schema(tables.QUARANTINE)))
    return planted


@pytest.mark.browser
@pytest.mark.slow
def test_page_shows_the_planted_quarantine_and_gate_results(spark, dashboard, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from spark_jobs.transforms import quarantine_rows
    from tests.dashboard.conftest import WAIT, screenshot, sign_in
    from tests.quality.quality_rows import bar, frame
    from tickcast.quality import QualityGate

    settings = dashboard.settings
    # Bars through the gate as the stream's bars stage does: validate, record, quarantine the
    # failing ones, publish the docs.
    gate = QualityGate(settings)
    bars = frame(spark, "bars_1m", [bar(0), bar(1), bar(2), bar(3), bar(4, volume=-5.0), bar(5, close=-1.0)])
    outcome = gate.validate(bars, "bars", ["symbol", "window_start"], table="bars_1m", layer="stream",
                            run_id="page-test:1", engine="pandas")
    gate.record(spark, outcome)
    tables.ensure_tables(spark, settings, [tables.QUARANTINE])
    _passed, failing = outcome.split(bars)
    tables.spark_append(quarantine_rows(failing, "bars_1m", "page-test:1"), settings, tables.QUARANTINE)
    assert gate.publish_docs(force=True) is not None
    now = datetime.now(UTC)
    refused = _refused_ticks(settings, now)

    failed = [r for r in outcome.results if not r.success]
    assert (outcome.rows_checked, outcome.rows_failed) == (6, 2)
    assert sorted(r.expectation for r in failed) == sorted([VOLUME, CLOSE, CLOSE_LOW])
    # Each bar counts once, under its first reason: the close bar's range before its pair check.
    planted_7d = {f"expectation:{VOLUME}": 1, f"expectation:{CLOSE}": 1, "invalid_price": 3, "late": 2}

    def shown_totals(driver):
        rows = _table(driver, "quality-reasons-table")
        if not rows or len(rows) < 3:
            return False
        return {r[0]: int(r[2].replace(",", "")) for r in rows[1:-1]}, rows[-1]

    sign_in(browser, dashboard.url, next_path="/quality?range=7d")
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.25)
    totals, total_row = wait.until(shown_totals)
    assert totals == planted_7d
    assert total_row == ["Total", "", f"{sum(planted_7d.values()):,}", "100.0%"]

    traces = wait.until(lambda d: d.execute_script(READ_BARS))
    assert {t["name"]: sum(t["y"]) for t in traces} == planted_7d
    assert "Quarantined records by reason, last 7 days" in browser.find_element(By.ID, "quality-reasons-title").text

    runs = wait.until(lambda d: _table(d, "quality-runs-table"))
    assert runs[1][:3] == ["bars_1m", "bars", "stream"]
    passed = len(outcome.results) - len(failed)
    assert runs[1][4:] == ["6", "2", f"{passed} of {len(outcome.results)}", "3", "0"]
    failures = _table(browser, "quality-failures-table")
    assert sorted(tuple(r) for r in failures[1:]) == sorted(
        ("bars_1m", "bars", "stream", r.expectation, f"{r.rows_failed} of 6 rows failed ({r.rows_failed / 6:.2%})")
        for r in failed)
    screenshot(browser, "quality")

    # A wider range from the control: the URL follows, the tick refused ten days ago appears.
    browser.find_element(By.CSS_SELECTOR, "#quality-range input[value='30d']").click()
    totals, total_row = wait.until(lambda d: (found := shown_totals(d)) and "duplicate_msg_id" in found[0] and found)
    assert totals == {**planted_7d, "duplicate_msg_id": refused["duplicate_msg_id"][0]}
    assert browser.current_url.endswith("/quality?range=30d")

    # The docs are the dashboard's own, at the link.
    link = browser.find_element(By.ID, "quality-docs-link")
    assert link.get_attribute("href") == f"{dashboard.url}/quality/docs/index.html"
    browser.get(link.get_attribute("href"))
    assert "have not been built" not in browser.page_source
    assert "bars" in browser.page_source
