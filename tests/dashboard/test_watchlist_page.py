"""The watchlist in headless Chromium: 5,000 symbols, a changed prediction pushed into its row
without a reload, the numbers as the API gives them, stale rows marked, saved watchlists and deep
links."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dashboard.conftest import WAIT, Dashboard, add_analyst, screenshot, serve_dashboard, sign_in
from tests.serving.market_data import Market, make_prediction
from tickcast.catalog.online import OnlineStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SYMBOLS = 5000
# The market fixture's three symbols with predictions, and as many more as make 5,000.
MANY = [f"W{i:04d}" for i in range(SYMBOLS - 3)]
CHANGED = "W1234"

GRID_ROWS = """
try { const api = dash_ag_grid.getApi('watchlist'); return api ? api.getDisplayedRowCount() : null; }
catch (e) { return null; }
"""
ROW_DATA = "return dash_ag_grid.getApi('watchlist').getRowNode(arguments[0])?.data || null;"
CELLS = """
const row = document.querySelector(`.ag-center-cols-container [row-id="${arguments[0]}"]`);
if (!row) { return null; }
const cells = {};
row.querySelectorAll('.ag-cell').forEach(c => { cells[c.getAttribute('col-id')] = c.innerText.trim(); });
return cells;
"""


@pytest.fixture
def watchlist(market: Market, tmp_path: Path) -> Iterator[Dashboard]:
    now = datetime.now(UTC)
    OnlineStore(market.settings.online_store_path).upsert(
        [make_prediction(s, now - timedelta(hours=1), 10.0 + i % 50) for i, s in enumerate(MANY)])
    add_analyst(market.settings)
    # No broker here: the live service polls the online store, often.
    yield from serve_dashboard(market.settings, tmp_path, TICKCAST_SCORER_PUBLISH_KAFKA="false",
                               TICKCAST_API_POLL_SECONDS="0.3")


def api_prediction(settings, symbol: str) -> dict:
    """The API's answer for a symbol, for comparing what the page shows."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tickcast.auth.apikeys import ApiKeyStore

    key = ApiKeyStore(settings.api_keys_path).create(f"check-{symbol.lower()}", ["read"])[1]
    api_settings = settings.model_copy(update={"scorer_publish_kafka": False})
    with TestClient(create_app(api_settings), headers={"X-API-Key": key}) as client:
        response = client.get(f"/api/v1/predictions/{symbol}")
        assert response.status_code == 200, response.text
        return response.json()


def _wait(driver, check, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda d: check(d))
    except Exception as exc:
        raise AssertionError(message) from exc


def _filter(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "watchlist-filter")
    # As a person does it: clear() would bypass React, which keeps the old text.
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def test_every_symbol_is_listed_and_a_new_prediction_changes_its_row_in_place(browser, watchlist: Dashboard) -> None:
    # Without a session: the sign-in form, and nothing of the data, even asked for directly.
    browser.get(f"{watchlist.url}/?list=x")
    assert "/login?next=" in browser.current_url and CHANGED not in browser.page_source
    refused = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all(['/_dash-layout', '/stream/watchlist'].map(p => fetch(p).then(r => r.status))).then(done);
    """)
    assert refused == [401, 401]

    sign_in(browser, watchlist.url)
    _wait(browser, lambda d: d.execute_script(GRID_ROWS) == SYMBOLS, f"the grid never showed {SYMBOLS} rows")
    screenshot(browser, "watchlist")
    # Everything the page loaded came from the dashboard itself: no CDN.
    origins = browser.execute_script(
        "return [...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    assert origins == [watchlist.url]
    loaded_at = browser.execute_script("return window.tickcastLive.loadedAt")

    before = browser.execute_script(ROW_DATA, CHANGED)
    assert before["signal"] == "BUY" and before["stale"] is False
    changed = make_prediction(CHANGED, datetime.now(UTC), 77.0).model_copy(update={
        "signal": "SELL", "predicted_return": -0.05, "predicted_price": 77.0 * 0.95, "p10": -0.09, "p50": -0.05,
        "p90": 0.01, "confidence": 0.81, "predicted_at": datetime.now(UTC)})
    OnlineStore(watchlist.settings.online_store_path).upsert([changed])
    after = _wait(browser, lambda d: (row := d.execute_script(ROW_DATA, CHANGED)) and row["signal"] == "SELL" and row,
                  "the changed prediction never reached its row")
    # Pushed, not reloaded: the same page, one navigation, and the live feed applied it.
    assert browser.execute_script("return window.tickcastLive.loadedAt") == loaded_at
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    assert browser.execute_script("return window.tickcastLive.events") >= 1
    assert after["predicted_return"] == pytest.approx(-0.05)

    # What the cells say is what the API says, in the units the API does not print.
    _filter(browser, CHANGED)
    cells = _wait(browser, lambda d: d.execute_script(CELLS, CHANGED), "the filtered row never rendered")
    api = api_prediction(watchlist.settings, CHANGED)
    close = api["predicted_price"] / (1 + api["predicted_return"])
    assert cells["signal"] == api["signal"] == "SELL"
    assert cells["predicted_return"] == f"{api['predicted_return'] * 100:+.2f}%" == "-5.00%"
    assert cells["p10"] == f"{api['p10'] * 100:+.2f}%" and cells["p90"] == f"{api['p90'] * 100:+.2f}%"
    assert cells["confidence"] == f"{round(api['confidence'] * 100)}%" == "81%"
    assert cells["price"] == f"{close:,.2f}" == "77.00"
    assert cells["p10_price"] == f"{close * (1 + api['p10']):,.2f}" == "70.07"
    assert cells["model"] == f"{api['model_name']} v{api['model_version']}"
    assert cells["stale"] == ("STALE" if api["stale"] else "fresh") == "fresh"
    assert _wait(browser, lambda d: d.execute_script(GRID_ROWS) == 1, "the filter kept other rows")

    # The market fixture's AAPL prediction is from 2024: stale, in the grid as in the API.
    _filter(browser, "AAPL")
    cells = _wait(browser, lambda d: d.execute_script(CELLS, "AAPL"), "AAPL's row never rendered")
    assert cells["stale"] == "STALE" and api_prediction(watchlist.settings, "AAPL")["stale"] is True
    assert "stale-row" in browser.execute_script(
        "return document.querySelector('.ag-center-cols-container [row-id=\"AAPL\"]').className")


def test_a_saved_watchlist_comes_back_from_its_link(browser, watchlist: Dashboard) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, watchlist.url)
    _wait(browser, lambda d: d.execute_script(GRID_ROWS) == SYMBOLS, "the grid never filled")
    browser.execute_script("""
        const api = dash_ag_grid.getApi('watchlist');
        ['AAPL', 'MSFT', 'W0007'].forEach(s => api.getRowNode(s).setSelected(true));
    """)
    browser.find_element(By.ID, "watchlist-name").send_keys("mine")
    browser.find_element(By.ID, "watchlist-save").click()
    _wait(browser, lambda d: "saved 'mine': 3 symbols" in d.find_element(By.ID, "watchlist-status").text,
          "saving the watchlist said nothing")
    # The URL follows the view; opened afresh it restores the list and the filter.
    _wait(browser, lambda d: "list=mine" in d.current_url, "the URL did not follow the chosen list")
    browser.get(f"{watchlist.url}/?list=mine&q=MSFT")
    _wait(browser, lambda d: d.execute_script(GRID_ROWS) == 1, "the deep link did not restore list and filter")
    assert browser.find_element(By.ID, "watchlist-filter").get_attribute("value") == "MSFT"
    browser.get(f"{watchlist.url}/?list=mine")
    _wait(browser, lambda d: d.execute_script(GRID_ROWS) == 3, "the saved list did not hold its 3 symbols")
    rows = browser.execute_script(
        "const out = []; dash_ag_grid.getApi('watchlist').forEachNode(n => out.push(n.data.symbol)); return out;")
    assert sorted(rows) == ["AAPL", "MSFT", "W0007"]
