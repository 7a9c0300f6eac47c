"""Fixtures for the API tests.

The market tables are written once per session (Spark commits take seconds) under a home of
their own; tests here only read them. Tests that need another state use `settings`.
"""

from __future__ import annotations

import pytest

from tests.serving.market_data import Market, build_market
from tickcast.settings import Settings


@pytest.fixture(scope="session")
def market(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Market:
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("market") / "home"})
    return build_market(spark, settings)
