"""The embedded PostgreSQL as the platform runs it: supervisord's program (first, stopped with a
fast shutdown, on the unix socket only), `up`'s health probe and databases, `tickcast status`."""

from __future__ import annotations

import stat

import psycopg
import pytest

from tickcast.core.settings import Settings
from tickcast.platform import airflow
from tickcast.platform import postgres as pg
from tickcast.platform.control import probe
from tickcast.platform.supervisor import PROGRAM_ORDER, programs, render_config


def test_the_program_comes_first_and_listens_on_its_socket_only(pg_settings: Settings) -> None:
    listed = programs(pg_settings)
    assert listed[0].name == "postgres" and PROGRAM_ORDER[0] == "postgres"
    program = listed[0]
    assert program.stopsignal == "INT" and not program.stopasgroup
    command = program.command
    assert command[command.index("-D") + 1] == str(pg_settings.postgres_data_dir)
    assert "listen_addresses=" in command
    assert f"unix_socket_directories={pg_settings.postgres_socket_dir}" in command
    assert f"port={pg_settings.postgres_port}" in command
    config = render_config(pg_settings, listed)
    section = config[config.index("[program:postgres]"):].split("\n\n")[0]
    assert "stopsignal=INT" in section
    assert "postgres" not in [p.name for p in programs(pg_settings.model_copy(update={"postgres_embedded": False}))]


def test_the_server_trusts_its_socket_only_and_refuses_tcp(pg_settings: Settings, postgres) -> None:
    assert stat.S_IMODE(pg_settings.postgres_socket_dir.stat().st_mode) == 0o700
    hba = [line.split() for line in (pg_settings.postgres_data_dir / "pg_hba.conf").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert {tuple(rule[:1] + rule[-1:]) for rule in hba} == {("local", "trust"), ("host", "reject")}
    with psycopg.connect(**postgres.layout.conninfo()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW shared_buffers").fetchone() == ("128MB",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=pg_settings.postgres_port, user=pg_settings.POSTGRES_USER,
                        dbname="postgres", connect_timeout=2)


def test_up_probes_a_real_connection_and_makes_only_missing_databases(pg_settings: Settings, postgres) -> None:
    assert pg.Layout.for_settings(pg_settings) == postgres.layout
    assert probe(pg_settings, "postgres", {"statename": "RUNNING"}) is None
    assert pg.ensure_databases(postgres.layout, pg_settings.POSTGRES_DATABASES) == []  # the fixture made them
    assert pg.ensure_databases(postgres.layout, ("extra", "auth")) == ["extra"]
    gone = pg_settings.model_copy(update={"postgres_port": pg_settings.postgres_port + 1})
    assert "no connection on" in (probe(gone, "postgres", {"statename": "RUNNING"}) or "")


def test_status_shows_the_version_databases_and_connections(pg_settings: Settings, postgres) -> None:
    from tickcast.cli.platform import _postgres_line

    with psycopg.connect(**postgres.layout.conninfo("alerts")):
        found = postgres_status(pg_settings)
    assert found.error is None and found.version and found.version.startswith("15.")
    assert set(pg_settings.POSTGRES_DATABASES) <= set(found.databases)
    assert found.connections.get("alerts") == 1 and found.max_connections == 100
    line = _postgres_line(found)
    assert line.startswith(f"PostgreSQL {found.version}: ") and "alerts (" in line

    gone = pg_settings.model_copy(update={"postgres_port": pg_settings.postgres_port + 1})
    assert "PostgreSQL unreachable" in _postgres_line(postgres_status(gone))


def postgres_status(settings: Settings) -> pg.PostgresStatus:
    return pg.status(pg.Layout.for_settings(settings))


def test_the_stores_follow_postgres_embedded(pg_settings: Settings) -> None:
    from tickcast.models import tracking

    for url in (pg_settings.api_keys_db_url, pg_settings.alerts_db_url, pg_settings.mlflow_backend_uri,
                tracking.auth_database_uri(pg_settings)):
        assert url.startswith("postgresql+psycopg://tickcast@/")
        assert f"host={pg_settings.postgres_socket_dir}" in url
    # Airflow 3 needs an async driver (asyncpg) beside psycopg2; without it, SQLite.
    expected = (pg_settings.postgres_url("airflow", driver="psycopg2") if airflow._has_async_postgres_driver()
                else f"sqlite:///{pg_settings.airflow_dir / 'airflow.db'}")
    assert airflow.database_url(pg_settings) == expected
