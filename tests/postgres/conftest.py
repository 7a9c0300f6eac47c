"""One PostgreSQL server for this directory's tests: Debian's postgresql 15 as a child process,
laid out as `up` lays it out for ``pg_settings`` (a home in tmp, the embedded profile, a free
port, the unix socket only), with the platform's databases made; and a fresh database per test
that wants one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tickcast.core.settings import Settings
from tickcast.platform.postgres import PostgresProcess, ensure_databases
from tickcast.platform.processes import free_port


@pytest.fixture(scope="session")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("pg-home"), postgres_embedded=True, postgres_port=free_port())


@pytest.fixture(scope="session")
def postgres(pg_settings: Settings) -> Iterator[PostgresProcess]:
    with PostgresProcess.for_settings(pg_settings) as server:
        ensure_databases(server.layout, pg_settings.POSTGRES_DATABASES)
        yield server


@pytest.fixture
def pg_url(postgres: PostgresProcess) -> str:
    """A new, empty database on the session's server: tests do not see each other's rows."""
    return postgres.url(f"t_{uuid.uuid4().hex[:12]}")
