"""The symbol page in headless Chromium, over a platform with real models (the shared ``scored``
state): the band and markers are the API's numbers as prices, the card is marked stale, the
signals are listed against what happened, the drivers are the API's explanation, a link restores
the view, and a 420 px wide phone still sees the card."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.dashboard.conftest import WAIT, Dashboard, add_analyst, screenshot, serve_dashboard, sign_in
from tests.serving.market_data import Scored

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The Plotly figure as the browser holds it: one entry per trace.
READ_TRACES = """
const plot = document.querySelector('#candles .js-plotly-plot');
if (!plot || !plot.data) { return null; }
return plot.data.map(t => ({type: t.type, name: t.name, x: t.x, y: t.y || null, close: t.close || null}));
"""


@pytest.fixture
def dashboard_over_models(scored: Scored, tmp_path: Path) -> Iterator[Dashboard]:
    from tickcast.auth.users import UserStore

    # The shared state is only read by others; a user and a session secret beside it change nothing.
    if UserStore(scored.settings.dashboard_users_path).get("analyst") is None:
        add_analyst(scored.settings)
    yield from serve_dashboard(scored.settings, tmp_path, TICKCAST_SCORER_PUBLISH_KAFKA="false")


@pytest.fixture
def api(scored: Scored):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    settings = scored.settings.model_copy(update={"scorer_publish_kafka": False})
    with TestClient(create_app(settings), headers={"X-API-Key": scored.keys["reader"]}) as client:
        yield client


def _traces(driver, symbol: str, bars: int) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    def drawn(d):
        traces = d.execute_script(READ_TRACES) or []
        candles = [t for t in traces if t["type"] == "candlestick"]
        if candles and candles[0]["name"] == symbol and len(candles[0]["x"]) == bars and any(
                t["name"] == "p10" for t in traces):
            return {t["name"]: t for t in traces}
        return False

    return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(drawn)


def _text(driver, element_id: str, contains: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(
        lambda d: (t := d.find_element(By.ID, element_id).text) and contains in t and t)


def test_the_symbol_page_draws_the_apis_numbers(browser, dashboard_over_models: Dashboard, api,
                                                scored: Scored) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, dashboard_over_models.url, next_path="/symbol/MSFT?interval=1d&range=1M")
    # The link restored the view: the symbol, the interval and the range (22 of its 30 bars).
    traces = _traces(browser, "MSFT", 22)
    checked = browser.execute_script(
        "return [...document.querySelectorAll('input[type=radio]:checked')].map(i => i.value)")
    assert set(checked) == {"1d", "1M"}

    history = api.get("/api/v1/predictions/MSFT/history").json()["predictions"]
    latest = api.get("/api/v1/predictions/MSFT").json()
    assert len(history) == 2
    # Drawn: the stored predictions and the latest one, each once. (MSFT: the API tests of the
    # shared state write newer AAPL predictions, never MSFT's.)
    def instant(text: str) -> datetime:  # the history and the latest route spell UTC differently
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    drawn = list({(instant(p["data_timestamp"]), instant(p["predicted_at"])): p
                  for p in [*history, latest]}.values())
    # The band is each prediction's quantiles (returns) as prices from the close it was made at.
    closes = [p["predicted_price"] / (1 + p["predicted_return"]) for p in drawn]
    for name in ("p10", "p50", "p90"):
        expected = sorted(c * (1 + p[name]) for c, p in zip(closes, drawn, strict=True))
        assert sorted(traces[name]["y"]) == pytest.approx(expected), name
    # One marker per directional signal, at the bar it was made on.
    for signal in ("BUY", "SELL"):
        made = [p for p in drawn if p["signal"] == signal]
        assert len(traces.get(signal, {}).get("y") or []) == len(made), signal

    # The card: the API's latest prediction, in its units, and stale (the data is from 2024).
    assert latest["stale"] is True
    card = _text(browser, "prediction", "STALE")
    assert f"{latest['predicted_return'] * 100:+.2f}%" in card
    assert f"{latest['predicted_price']:,.2f}" in card
    close = latest["predicted_price"] / (1 + latest["predicted_return"])
    assert f"{close * (1 + latest['p10']):,.2f} / {close * (1 + latest['p90']):,.2f}" in card
    assert f"{latest['model_name']} v{latest['model_version']}" in card
    assert f"Horizon {latest['horizon']} (daily bars)" in card

    # Signals against what happened: both predictions, their horizon still ahead.
    table = _text(browser, "signal-history", "Realised")
    assert table.count("pending") == 2 or "no BUY or SELL signal" in table
    # The drivers are the API's explanation of the latest prediction.
    explanation = api.get("/api/v1/explanations/MSFT").json()
    assert _text(browser, "drivers-text", explanation["text"][:40]).strip() == explanation["text"].strip()
    features = [row.find_elements(By.TAG_NAME, "td")[0].text
                for row in browser.find_elements(By.CSS_SELECTOR, "#drivers-table tbody tr")]
    assert features == [a["feature"] for a in explanation["attributions"]]
    screenshot(browser, "symbol")

    # A control rewrites the URL, so the view can be shared.
    browser.find_element(By.CSS_SELECTOR, "#symbol-range input[value='3M']").click()
    _traces(browser, "MSFT", 30)
    assert browser.current_url.endswith("/symbol/MSFT?interval=1d&range=3M")


def test_a_phone_sees_the_card(browser, dashboard_over_models: Dashboard) -> None:
    browser.set_window_size(420, 860)
    sign_in(browser, dashboard_over_models.url, next_path="/symbol/AAPL")
    _text(browser, "prediction", "AAPL")
    box = browser.execute_script("""
        const r = document.getElementById('prediction').getBoundingClientRect();
        return {left: r.left, right: r.right, top: r.top, width: window.innerWidth, height: window.innerHeight};
    """)
    assert box["left"] >= 0 and box["right"] <= box["width"] + 1
    assert 0 <= box["top"] < box["height"] / 2  # above the fold, before the chart
    screenshot(browser, "symbol-phone")
