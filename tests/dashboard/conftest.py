"""Fixtures for the dashboard tests: market data in real Delta tables, a signed-up analyst, the
dashboard served by ``tickcast serve dashboard`` (uvicorn) in a subprocess, and a headless
Chromium signed in to it (the ``browser`` fixture itself is shared: tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving.market_data import Market, build_market
from tickcast.core.settings import Settings
from tickcast.platform.processes import free_port, stop_process, wait_for_port

# Seconds; generous because CI machines are shared, not a speed check.
WAIT = 90
ANALYST = "analyst"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def market(spark, settings: Settings) -> Market:
    """Fresh per test: browser tests append to it to watch the page update."""
    return build_market(spark, settings)


def add_analyst(settings: Settings) -> None:
    from tickcast.auth.users import UserStore

    UserStore(settings.dashboard_users_path).create(ANALYST, PASSWORD)


@dataclass(frozen=True)
class Dashboard:
    url: str  # with no trailing slash
    settings: Settings
    log: Path


def serve_dashboard(settings: Settings, tmp_path: Path, **env: str) -> Iterator[Dashboard]:
    port = free_port()
    environ = {
        **os.environ,
        "TICKCAST_HOME": str(settings.home_dir),
        "TICKCAST_DASHBOARD_REFRESH_SECONDS": "1",
        **env,
    }
    log_path = tmp_path / "dashboard.log"
    log = log_path.open("w")
    # cwd: a directory without a .env, so only the environment above configures it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickcast.cli", "serve", "dashboard", "--port", str(port)],
        env=environ, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=WAIT, proc=proc)
        yield Dashboard(f"http://127.0.0.1:{port}", settings, log_path)
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def dashboard(market: Market, tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard over ``market``, with the analyst able to sign in."""
    add_analyst(market.settings)
    yield from serve_dashboard(market.settings, tmp_path)


def sign_in(driver, base_url: str, username: str = ANALYST, password: str = PASSWORD, next_path: str = "/") -> None:
    """Through the sign-in form, as a person would; then wait for the page asked for."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/login?next={quote(next_path, safe='')}")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, WAIT).until(lambda d: "/login" not in d.current_url)


@pytest.fixture
def signed_in(browser, dashboard: Dashboard):
    """Chromium signed in to ``dashboard`` as the analyst."""
    sign_in(browser, dashboard.url)
    return browser


def screenshot(driver, name: str) -> None:
    """The page as it is now, for the README (docs/screenshots/NAME.png), when asked for with
    TICKCAST_SCREENSHOTS_DIR: the tests never write into the repository on their own."""
    folder = os.environ.get("TICKCAST_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
