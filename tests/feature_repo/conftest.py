"""Fixtures for the Feast feature store: a Spark-made `features` table per test, a redis-server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tickcast.catalog import tables
from tickcast.core.settings import Settings


@pytest.fixture(scope="session")
def empty_features_table(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Delta `features` table exactly as the platform creates it (Spark, tables.json)."""
    from tickcast.catalog.tables import ensure_tables

    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("features-template")})
    ensure_tables(spark, settings, ["features"])
    return Path(tables.table_path(settings, "features"))


@pytest.fixture
def fs_settings(settings: Settings, empty_features_table: Path) -> Settings:
    """Settings with a fresh home holding a copy of the empty table (a Delta log is relocatable)."""
    shutil.copytree(empty_features_table, tables.table_path(settings, "features"))
    return settings


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server (Debian's) on a free port, no persistence."""
    from tickcast.platform.redis_server import RedisProcess

    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.port
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def online_settings(request: pytest.FixtureRequest, fs_settings: Settings) -> Settings:
    """The same test against the SQLite online store and against a real Redis."""
    if request.param == "sqlite":
        return fs_settings
    import redis

    port = request.getfixturevalue("redis_port")
    redis.Redis(host="127.0.0.1", port=port).flushall()
    return fs_settings.model_copy(
        update={"feast_online_store": "redis", "feast_redis_connection": f"127.0.0.1:{port}"}
    )
