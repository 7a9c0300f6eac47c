"""Fixtures for the dashboard tests: market data in real Delta tables, a headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.market_data import Market, build_market
from tickcast.core.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def market(spark, settings: Settings) -> Market:
    """Fresh per test: the browser test appends to it to watch the page update."""
    return build_market(spark, settings)


@pytest.fixture
def browser(tmp_path: Path):
    """Debian's Chromium, headless, with a profile of its own and nothing phoning home."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
