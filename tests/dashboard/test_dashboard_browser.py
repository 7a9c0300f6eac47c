"""The dashboard in real headless Chromium: pick a symbol, see its candles and prediction, live.

The dashboard runs as `tickcast serve dashboard` (uvicorn) in a subprocess over Delta tables
written by Spark and a real online store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from tests.serving.market_data import Market, bar_rows, make_prediction, write_bars
from tickcast.catalog.online import OnlineStore
from tickcast.platform.processes import free_port, stop_process, wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT = 90  # seconds; generous because CI machines are shared, not a speed check

# The Plotly figure as the browser holds it: one entry per trace.
READ_TRACES = """
const graph = document.getElementById('candles');
const plot = graph && graph.querySelector('.js-plotly-plot');
if (!plot || !plot.data) { return null; }
return plot.data.map(t => ({type: t.type, name: t.name, x: t.x, close: t.close}));
"""


@pytest.fixture
def dashboard_url(market: Market, tmp_path: Path):
    port = free_port()
    env = {
        **os.environ,
        "TICKCAST_HOME": str(market.settings.home_dir),
        "TICKCAST_DASHBOARD_REFRESH_SECONDS": "1",
    }
    log = (tmp_path / "dashboard.log").open("w")
    # cwd: a directory without a .env, so only the environment above configures it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickcast.cli", "serve", "dashboard", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=WAIT, proc=proc)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_process(proc)
        log.close()


def _naive_iso(rows: list[tuple]) -> list[str]:
    return [r[1].astimezone(UTC).replace(tzinfo=None).isoformat() for r in rows]


def _wait_for_candles(driver, symbol: str, rows: list[tuple]) -> dict:
    """Wait until the chart shows exactly these bars of this symbol; return the trace."""
    from selenium.webdriver.support.ui import WebDriverWait

    expected_x = _naive_iso(rows)
    seen: list = []

    def shown(d):
        traces = d.execute_script(READ_TRACES) or []
        seen[:] = traces
        candles = [t for t in traces if t["type"] == "candlestick"]
        if candles and candles[0]["name"] == symbol and candles[0]["x"] == expected_x:
            return candles[0]
        return False

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(shown)
    except Exception as exc:
        summary = [(t["type"], t["name"], len(t["x"] or [])) for t in seen]
        raise AssertionError(f"chart never showed {len(rows)} {symbol} bars; last seen {summary}") from exc


def _pick(driver, css_root: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    if css_root == "#symbol":
        driver.find_element(By.ID, "symbol").click()
        css_root = ".dash-dropdown-options"
    # The option's radio input is hidden; its label is what a user clicks.
    option = WebDriverWait(driver, WAIT).until(
        ec.element_to_be_clickable(
            (By.CSS_SELECTOR, f"{css_root} [role=option]:has(input[value='{value}'])")
        )
    )
    option.click()


def _card_text(driver, contains: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(
        lambda d: (t := d.find_element(By.ID, "prediction").text) and contains in t and t
    )


def test_pick_a_symbol_and_see_its_candles_and_prediction(
    spark, browser, dashboard_url: str, market: Market, tmp_path: Path
) -> None:
    browser.get(dashboard_url)

    # The first symbol is selected on load, with its candles and its prediction.
    trace = _wait_for_candles(browser, "AAPL", market.bars_1d["AAPL"])
    assert trace["close"] == [r[6] for r in market.bars_1d["AAPL"]]
    card = _card_text(browser, "BUY")
    assert "AAPL" in card and "momentum-baseline v1" in card
    data_ts = market.predictions["AAPL"].data_timestamp
    assert f"Data timestamp {data_ts:%Y-%m-%d %H:%M:%S} UTC" in card

    _pick(browser, "#symbol", "MSFT")
    trace = _wait_for_candles(browser, "MSFT", market.bars_1d["MSFT"])
    assert trace["close"] == [r[6] for r in market.bars_1d["MSFT"]]
    _card_text(browser, "MSFT")
    browser.save_screenshot(str(tmp_path / "dashboard-msft.png"))

    _pick(browser, "#symbol", "NOPRED")
    _wait_for_candles(browser, "NOPRED", market.bars_1d["NOPRED"])
    _card_text(browser, "No prediction yet")

    _pick(browser, "#symbol", "AAPL")
    _pick(browser, "#interval", "1m")
    _wait_for_candles(browser, "AAPL", market.bars_1m["AAPL"])

    # Live: new data shows up without reloading the page.
    _pick(browser, "#interval", "1d")
    last = market.bars_1d["AAPL"][-1]
    new_bar = bar_rows("AAPL", last[2], timedelta(days=1), 1, 250.0)
    write_bars(spark, market.settings, "bars_1d", new_bar)
    sell = make_prediction("AAPL", new_bar[0][2], 250.0).model_copy(update={"signal": "SELL"})
    OnlineStore(market.settings.online_store_path).upsert([sell])
    _wait_for_candles(browser, "AAPL", market.bars_1d["AAPL"] + new_bar)
    _card_text(browser, "SELL")
    browser.save_screenshot(str(tmp_path / "dashboard-live.png"))
