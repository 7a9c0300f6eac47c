"""Fixtures for the dashboard tests: market data in real Delta tables (the headless Chromium,
``browser``, is shared: tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.serving.market_data import Market, build_market
from tickcast.core.settings import Settings


@pytest.fixture
def market(spark, settings: Settings) -> Market:
    """Fresh per test: the browser test appends to it to watch the page update."""
    return build_market(spark, settings)
