"""The data providers' stand-ins (``provider_standins.Providers``) on a real local server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from provider_standins import Providers
from pytest_httpserver import HTTPServer


@pytest.fixture
def providers() -> Iterator[Providers]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield Providers(server).install()
    finally:
        server.clear()
        server.stop()
