"""The platform's MLflow server, started the way `tickcast up` starts it, shares one
store with commands that never talk to it."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import pytest

from tickcast.core.settings import Settings
from tickcast.models import tracking
from tickcast.platform import control
from tickcast.platform.processes import free_port
from tickcast.platform.status import collect_status
from tickcast.platform.supervisor import PlatformError, Supervisor

# Starts supervisord and an MLflow server (creating and migrating its SQLite store).
pytestmark = pytest.mark.slow


def _path(file_uri: str) -> Path:
    parsed = urlparse(file_uri)
    assert parsed.scheme == "file", file_uri
    return Path(url2pathname(parsed.path))


@pytest.mark.usefixtures("restore_mlflow_uris")
def test_server_under_supervisord_shares_its_store_with_direct_clients(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from pydantic import SecretStr

    # Recorded, so the credentials configure_mlflow exports below are undone after the test.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    settings = settings.model_copy(update={"mlflow_port": free_port()})
    url = tracking.server_url(settings)
    other = settings.model_copy(update={"home": tmp_path / "other-home"})
    pid = None
    try:
        # First start: creates and migrates the SQLite schema before listening.
        assert control.up(settings, only=["mlflow"], timeout=240) == ["mlflow"]
        assert ("MLflow", url) in control.urls(settings, ["mlflow"])
        password_file = tracking.admin_password_file(settings)
        assert ("MLflow login", f"admin; the password is in {password_file}") in control.urls(settings, ["mlflow"])
        admin = ("admin", password_file.read_text().strip())
        over_http = settings.model_copy(update={"mlflow_tracking_uri": url, "mlflow_tracking_username": admin[0],
                                                "mlflow_tracking_password": SecretStr(admin[1])})
        by_name = {p.name: p for p in collect_status(settings).programs}
        assert by_name["mlflow"].state == "RUNNING"
        pid = by_name["mlflow"].pid

        # The UI page (signed in: without a user it is 401), and a state-changing API call as
        # the UI's own page makes it (Host and Origin both 127.0.0.1:port) pass mlflow's
        # security middleware.
        assert httpx.get(f"{url}/", timeout=10).status_code == 401
        assert httpx.get(f"{url}/", auth=admin, timeout=10).status_code == 200
        created = httpx.post(
            f"{url}/ajax-api/2.0/mlflow/experiments/create",
            json={"name": "from-the-ui"},
            headers={"Origin": url},
            auth=admin,
            timeout=10,
        )
        assert created.status_code == 200, created.text

        # A run logged through the server...
        exp = tracking.experiment(over_http, "served")
        assert _path(exp.artifact_location).is_relative_to(settings.mlflow_dir / "artifacts")
        http_client = MlflowClient(tracking_uri=url)
        run = http_client.create_run(exp.experiment_id)
        http_client.log_metric(run.info.run_id, "mae", 0.25, step=3)
        note = tmp_path / "note.txt"
        note.write_text("served")
        http_client.log_artifact(run.info.run_id, str(note))
        http_client.set_terminated(run.info.run_id)

        # ...is in the SQLite store a direct client reads, artifacts as plain files.
        direct = MlflowClient(tracking_uri=settings.mlflow_backend_uri)
        stored = direct.get_run(run.info.run_id)
        assert stored.data.metrics == {"mae": 0.25}
        assert stored.info.status == "FINISHED"
        artifact = _path(stored.info.artifact_uri) / "note.txt"
        assert artifact.read_text() == "served"
        assert artifact.is_relative_to(settings.mlflow_dir / "artifacts")

        # And a command's run, logged with no server in its path, shows in the server.
        tracking.configure_mlflow(settings)
        local_exp = tracking.experiment(settings, "trained-offline")
        local_run = direct.create_run(local_exp.experiment_id)
        direct.log_param(local_run.info.run_id, "model", "momentum")
        assert http_client.get_run(local_run.info.run_id).data.params == {"model": "momentum"}
        names = {e.name for e in http_client.search_experiments()}
        assert {"Default", "from-the-ui", "served", "trained-offline"} <= names

        # Port taken: a second platform on the same port refuses to start its server.
        with pytest.raises(PlatformError, match="TICKCAST_MLFLOW_PORT"):
            control.up(other, only=["mlflow"], timeout=30)
    finally:
        control.down(other)
        stopped = control.down(settings)
    assert stopped is True
    assert not Supervisor(settings).is_running()
    assert not control.port_open("127.0.0.1", settings.mlflow_port)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
