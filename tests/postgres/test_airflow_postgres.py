"""Airflow's metadata on the embedded PostgreSQL: `airflow db migrate` (what each component runs
first, `tickcast airflow run`) against the ``airflow`` database, over psycopg2, with the async
engine Airflow 3 opens beside it (asyncpg)."""

from __future__ import annotations

import psycopg
import pytest

from tickcast.core.settings import Settings
from tickcast.platform import airflow


@pytest.mark.slow  # Airflow's ~60 migrations: ~30 s on a busy 2-core box
@pytest.mark.skipif(not airflow._has_async_postgres_driver(),
                    reason="airflow/.venv lacks asyncpg (Airflow 3's async engine): its metadata stays in SQLite")
def test_airflow_db_migrate_makes_its_tables_in_postgresql(pg_settings: Settings, postgres) -> None:
    assert airflow.database_url(pg_settings) == pg_settings.postgres_url("airflow", driver="psycopg2")

    airflow.migrate(pg_settings)

    with psycopg.connect(**postgres.layout.conninfo("airflow")) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"dag", "dag_run", "task_instance", "serialized_dag"} <= tables
    assert not (pg_settings.airflow_dir / "airflow.db").exists()
