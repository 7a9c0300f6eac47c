"""The local MLflow server runs closed: its basic-auth app with a generated admin password,
and nothing for anyone else. A client without credentials cannot move an alias, a user the
admin created has no permission until granted one, and the platform's own credentials (the
password file, or a remote server's username and password in the settings) work."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tickcast.core.settings import Settings
from tickcast.models import registry, tracking
from tickcast.platform.processes import free_port

# Starts an MLflow server (creating and migrating its SQLite stores): ~15 s, once per module.
pytestmark = pytest.mark.slow

MODEL = "tickcast-lstm-1d"
ALIAS = "/api/2.0/mlflow/registered-models/alias"


@pytest.fixture(scope="module")
def server(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose local server runs, as `up` prepares and starts it, with one registered
    model of two versions (registered through the store directly, as the promotion path does)."""
    from mlflow.tracking import MlflowClient

    home = tmp_path_factory.mktemp("mlflow-auth-home")
    settings = base_settings.model_copy(update={"home": home, "mlflow_port": free_port()})
    tracking.prepare_local_store(settings)
    assert tracking.prepare_server_auth(settings) is True
    direct = MlflowClient(tracking_uri=settings.mlflow_backend_uri, registry_uri=settings.mlflow_backend_uri)
    direct.create_registered_model(MODEL)
    for _ in range(2):
        direct.create_model_version(MODEL, source=f"{settings.mlflow_artifact_root}/bundle_lstm")
    log = (home / "mlflow-server.log").open("w")
    process = subprocess.Popen(tracking.server_command(settings), env={**os.environ, **tracking.server_environment(settings)},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = tracking.server_url(settings)
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(home / 'mlflow-server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.5)
        else:
            pytest.fail("mlflow server not healthy after 240 tries")
        yield settings
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn worker: our own group
        process.wait(timeout=60)
        log.close()


def _admin(settings: Settings) -> tuple[str, str]:
    return tracking.ADMIN_USERNAME, tracking.admin_password_file(settings).read_text().strip()


def _champion(settings: Settings) -> str | None:
    """The champion's version as the store holds it (read directly, as the scorer reads it)."""
    from mlflow.tracking import MlflowClient

    direct = MlflowClient(tracking_uri=settings.mlflow_backend_uri, registry_uri=settings.mlflow_backend_uri)
    found = registry.champion(direct, MODEL)
    return None if found is None else str(found.version)


def _set_alias(settings: Settings, version: str, auth: tuple[str, str] | None) -> httpx.Response:
    return httpx.post(f"{tracking.server_url(settings)}{ALIAS}", auth=auth, timeout=10,
                      json={"name": MODEL, "alias": registry.CHAMPION, "version": version})


def test_secrets_are_the_owners_only_and_the_config_holds_none(server: Settings) -> None:
    for path in (tracking.admin_password_file(server), tracking.auth_config_path(server),
                 server.mlflow_dir / "flask_secret_key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    config = tracking.auth_config_path(server).read_text()
    assert "default_permission = NO_PERMISSIONS" in config
    assert _admin(server)[1] not in config
    assert _admin(server)[1] not in " ".join(tracking.server_command(server))
    # A second setup keeps the password (and says it created none).
    before = _admin(server)
    assert tracking.prepare_server_auth(server) is False
    assert _admin(server) == before


def test_health_is_open_and_everything_else_needs_a_user(server: Settings) -> None:
    url = tracking.server_url(server)
    health = httpx.get(f"{url}/health", timeout=10)
    assert (health.status_code, health.text) == (200, "OK")  # what `up` and the quickstart probe
    assert httpx.get(f"{url}/", timeout=10).status_code == 401
    assert httpx.get(f"{url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL},
                     timeout=10).status_code == 401


def test_a_client_without_credentials_cannot_move_champion(server: Settings, monkeypatch) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    before = _champion(server)  # the other tests of the module move it too
    target = "2" if before == "1" else "1"
    assert _set_alias(server, target, auth=None).status_code == 401
    assert _set_alias(server, target, auth=("admin", "a-guessed-password")).status_code == 401
    # mlflow's own client, with no credentials in its environment, is refused the same way.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(MlflowException, match="401|not authenticated|Unauthorized"):
        # The registry named too: another test in this process may have set mlflow's global one.
        url = tracking.server_url(server)
        MlflowClient(tracking_uri=url, registry_uri=url).set_registered_model_alias(MODEL, registry.CHAMPION, target)
    assert _champion(server) == before


def test_the_admin_moves_champion_and_another_user_gets_no_permission(server: Settings, monkeypatch) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    moved = _set_alias(server, "2", auth=_admin(server))
    assert moved.status_code == 200, moved.text
    assert _champion(server) == "2"

    # A user the admin creates has no permission on the model until one is granted.
    username, password = _admin(server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    AuthServiceClient(tracking.server_url(server)).create_user("analyst", "an-analysts-password-1")
    assert _set_alias(server, "1", auth=("analyst", "an-analysts-password-1")).status_code == 403
    assert httpx.get(f"{tracking.server_url(server)}/api/2.0/mlflow/registered-models/get", params={"name": MODEL},
                     auth=("analyst", "an-analysts-password-1"), timeout=10).status_code == 403
    assert _champion(server) == "2"


@pytest.mark.usefixtures("restore_mlflow_uris")
def test_remote_credentials_from_the_settings_reach_mlflow(server: Settings, monkeypatch) -> None:
    from pydantic import SecretStr

    # Recorded by monkeypatch, so what configure_mlflow exports is undone after the test.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    username, password = _admin(server)
    remote = server.model_copy(update={"mlflow_tracking_uri": tracking.server_url(server),
                                       "mlflow_tracking_username": username,
                                       "mlflow_tracking_password": SecretStr(password)})
    assert password not in repr(remote) and password not in str(remote.model_dump())
    tracking.configure_mlflow(remote)
    client = registry.client()
    registry.make_champion(client, MODEL, "1", None)  # the promotion path, over HTTP
    assert _champion(server) == "1"
    assert tracking.experiment(remote, "over-http").name == "over-http"


def test_a_lost_password_file_is_generated_again_and_set_on_the_admin(server: Settings) -> None:
    old = _admin(server)
    tracking.admin_password_file(server).unlink()
    assert tracking.prepare_server_auth(server) is True
    new = _admin(server)
    assert new != old
    # The running server reads its users from the store at each request.
    assert _set_alias(server, "2", auth=old).status_code == 401
    assert _set_alias(server, "2", auth=new).status_code == 200
