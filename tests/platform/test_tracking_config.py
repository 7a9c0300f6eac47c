"""Tracking settings, the server command line and the direct (serverless) SQLite store."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from tickcast.core.settings import Settings
from tickcast.models import tracking


def _path(file_uri: str) -> Path:
    parsed = urlparse(file_uri)
    assert parsed.scheme == "file"
    return Path(url2pathname(parsed.path))


def test_local_store_lives_under_home(settings: Settings) -> None:
    assert settings.mlflow_dir == settings.home_dir / "mlflow"
    assert settings.mlflow_backend_uri == f"sqlite:///{settings.home_dir}/mlflow/mlflow.db"
    assert settings.mlflow_backend_uri.startswith("sqlite:////")  # absolute path
    assert _path(settings.mlflow_artifact_root) == settings.home_dir / "mlflow" / "artifacts"
    assert settings.tracking_uri == settings.mlflow_backend_uri
    assert tracking.is_local(settings)
    assert tracking.server_url(settings) == "http://127.0.0.1:5000"


def test_environment_overrides_tracking_uri_and_server_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith("TICKCAST_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("TICKCAST_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TICKCAST_MLFLOW_PORT", "5123")
    monkeypatch.setenv("TICKCAST_MLFLOW_HOST", "0.0.0.0")
    settings = Settings()
    assert settings.tracking_uri == f"sqlite:///{tmp_path}/h/mlflow/mlflow.db"
    assert tracking.server_url(settings) == "http://127.0.0.1:5123"

    monkeypatch.setenv("TICKCAST_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    remote = Settings()
    assert remote.tracking_uri == "http://mlflow:5000"
    assert not tracking.is_local(remote)
    # The local store stays where it was; commands just do not use it.
    assert remote.mlflow_backend_uri == settings.mlflow_backend_uri


def test_server_command_serves_the_shared_store(settings: Settings) -> None:
    settings = settings.model_copy(update={"mlflow_port": 5123})
    command = tracking.server_command(settings, bin_dir=Path("/venv/bin"))
    assert command[:2] == ["/venv/bin/mlflow", "server"]
    assert "--no-serve-artifacts" in command
    args = [a for a in command[2:] if a != "--no-serve-artifacts"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags == {
        "--app-name": "basic-auth",
        "--backend-store-uri": settings.mlflow_backend_uri,
        "--default-artifact-root": settings.mlflow_artifact_root,
        "--host": "127.0.0.1",
        "--port": "5123",
        "--workers": "1",
    }


def test_server_auth_is_prepared_closed_with_its_secrets_in_private_files(settings: Settings) -> None:
    import configparser
    import stat

    assert tracking.server_environment(settings) == {  # before setup: no secret to hand over
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_AUTH_CONFIG_PATH": str(settings.mlflow_dir / "basic_auth.ini"),
    }
    assert tracking.prepare_server_auth(settings) is True
    assert tracking.prepare_server_auth(settings) is False  # once: the password stays
    password = tracking.admin_password_file(settings).read_text().strip()
    assert tracking.admin_password_file(settings) == settings.home_dir / "auth" / "mlflow_admin_password"
    assert len(password) >= 32
    env = tracking.server_environment(settings)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32
    config = configparser.ConfigParser()
    config.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert dict(config["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": f"sqlite:///{settings.mlflow_dir}/basic_auth.db",
        "admin_username": "admin",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
    }
    for path in (tracking.admin_password_file(settings), tracking.auth_config_path(settings),
                 settings.mlflow_dir / "flask_secret_key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_remote_credentials_are_exported_to_mlflow_and_never_shown(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    tracking.export_credentials(settings)  # none configured: nothing exported
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ
    remote = settings.model_copy(update={"mlflow_tracking_uri": "http://mlflow:5000",
                                         "mlflow_tracking_username": "tickcast",
                                         "mlflow_tracking_password": SecretStr("s3cret-remote-pass")})
    assert "s3cret-remote-pass" not in repr(remote)
    tracking.export_credentials(remote)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "tickcast"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-remote-pass"


def test_server_command_allows_a_named_bind_host(settings: Settings) -> None:
    settings = settings.model_copy(update={"mlflow_host": "ml.example", "mlflow_port": 5123})
    command = tracking.server_command(settings)
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert {"ml.example", "ml.example:*", "127.0.0.1:*", "localhost:*"} <= set(allowed)
    assert command[command.index("--cors-allowed-origins") + 1] == "http://ml.example:5123"
    assert tracking.server_url(settings) == "http://ml.example:5123"


@pytest.mark.slow  # creating an MLflow SQLite store runs its whole chain of schema migrations
@pytest.mark.usefixtures("restore_mlflow_uris")
def test_direct_store_keeps_every_artifact_under_home(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert tracking.configure_mlflow(settings) == settings.mlflow_backend_uri
    assert mlflow.get_tracking_uri() == settings.mlflow_backend_uri
    assert mlflow.get_registry_uri() == settings.mlflow_backend_uri

    exp = tracking.experiment(settings, "baseline / momentum")
    assert exp.artifact_location == f"{settings.mlflow_artifact_root}/baseline-momentum"
    assert tracking.experiment(settings, "baseline / momentum").experiment_id == exp.experiment_id
    # A run logged without choosing an experiment lands in "Default", created by
    # configure_mlflow with the server's artifact root rather than ./mlruns.
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    artifact = _path(run.info.artifact_uri) / "note.txt"
    assert artifact.read_text() == "hello"
    assert artifact.is_relative_to(settings.mlflow_dir / "artifacts")
    assert list(cwd.iterdir()) == []
