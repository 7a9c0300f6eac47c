"""Fixtures for the API tests.

The market tables are written once per session (Spark commits take seconds) under a home of
their own; tests here only read them. Tests that need another state use `settings`. The state
with real models, `scored`, is shared with the dashboard tests: tests/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.serving.market_data import Market, build_market
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.core.settings import Settings


@pytest.fixture(scope="session")
def market(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Market:
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("market") / "home"})
    return build_market(spark, settings)


@pytest.fixture(scope="session")
def api_keys(market: Market) -> dict[str, str]:
    """Keys in the market home: `reader` (read), `scorer` (read, score), `tight` (read, 2 a minute)."""
    store = ApiKeyStore(market.settings.api_keys_path)
    return {
        "reader": store.create("reader", ["read"], rate_limit="100000/second")[1],
        "scorer": store.create("scorer", ["read", "score"], rate_limit="100000/second")[1],
        "tight": store.create("tight", ["read"], rate_limit="2/minute")[1],
    }
