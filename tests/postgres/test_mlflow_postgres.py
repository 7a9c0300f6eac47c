"""MLflow on the embedded PostgreSQL: the platform's commands open the tracking store and the
registry directly (``settings.mlflow_backend_uri`` on ``postgres_embedded``), and the users of
the MLflow server `up` runs (its basic-auth app) are in a PostgreSQL database too."""

from __future__ import annotations

import pytest

from tickcast.core.settings import Settings
from tickcast.models import tracking

# Opening the store runs MLflow's migrations on a new database: ~10-25 s on a busy 2-core box.
pytestmark = pytest.mark.slow

MODEL = "tickcast-lstm-pg"


def _client(settings: Settings):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


@pytest.fixture(scope="module")
def registered(pg_settings: Settings, postgres) -> tuple[str, str]:
    """A run logged and a model version registered from it with the alias champion: (run id, version)."""
    assert pg_settings.tracking_uri.startswith("postgresql+psycopg://")
    experiment = tracking.experiment(pg_settings, "pg-check")
    client = _client(pg_settings)
    run = client.create_run(experiment.experiment_id, run_name="on-postgres")
    client.log_param(run.info.run_id, "window", "60")
    for step, loss in enumerate((0.9, 0.5, 0.3)):
        client.log_metric(run.info.run_id, "val_loss", loss, step=step)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)
    return run.info.run_id, version.version


def test_a_run_a_model_version_and_its_alias_are_stored_in_postgresql(pg_settings: Settings, registered) -> None:
    run_id, version = registered
    client = _client(pg_settings)

    run = client.get_run(run_id)
    assert run.data.params == {"window": "60"}
    assert [m.value for m in client.get_metric_history(run_id, "val_loss")] == [0.9, 0.5, 0.3]
    assert run.info.artifact_uri.startswith(pg_settings.mlflow_artifact_root)  # under the home, not ./mlruns
    assert client.get_model_version_by_alias(MODEL, "champion").version == version
    # In PostgreSQL itself, not in a SQLite file beside it.
    import psycopg

    with psycopg.connect(host=str(pg_settings.postgres_socket_dir), port=pg_settings.postgres_port,
                         user=pg_settings.POSTGRES_USER, dbname="mlflow", connect_timeout=5) as conn:
        assert conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                            (MODEL,)).fetchall() == [("champion", int(version))]
    assert not (pg_settings.mlflow_dir / "mlflow.db").exists()


def test_the_servers_users_are_in_postgresql_and_a_lost_password_is_set_again(pg_settings: Settings,
                                                                               postgres) -> None:
    """The basic-auth app's database (its ini's database_uri) is the PostgreSQL ``mlflow_auth``
    database; a password file lost while the admin survives there is generated and set again."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    settings = pg_settings
    uri = tracking.auth_database_uri(settings)
    assert uri == settings.postgres_url("mlflow_auth")
    assert tracking.prepare_server_auth(settings)
    assert f"database_uri = {uri}" in tracking.auth_config_path(settings).read_text()
    # What the server does at its first start: the admin, with the password of the file.
    store = SqlAlchemyStore()
    store.init_db(uri)
    first = tracking.admin_password_file(settings).read_text().strip()
    if not store.has_user(tracking.ADMIN_USERNAME):
        store.create_user(tracking.ADMIN_USERNAME, first, is_admin=True)
    store.update_user(tracking.ADMIN_USERNAME, password=first)
    assert store.authenticate_user(tracking.ADMIN_USERNAME, first)

    tracking.admin_password_file(settings).unlink()
    assert tracking.prepare_server_auth(settings)

    second = tracking.admin_password_file(settings).read_text().strip()
    assert second != first
    assert store.authenticate_user(tracking.ADMIN_USERNAME, second)
    assert not store.authenticate_user(tracking.ADMIN_USERNAME, first)
    assert not (settings.mlflow_dir / "basic_auth.db").exists()
    store.engine.dispose()
