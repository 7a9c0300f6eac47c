"""MLflow tracking: one store shared by the platform's MLflow server and the commands.

Locally, commands (train, evaluate, ...) open the SQLite store under
``$TICKCAST_HOME/mlflow`` directly, and the server that ``tickcast up`` runs serves
the very same database and artifact directory. Commands therefore work whether or
not the server runs, and its UI shows everything they logged. The server does not
proxy artifacts (``--no-serve-artifacts``): artifact locations stay plain
``file://`` URIs that a direct client resolves on its own.

``TICKCAST_MLFLOW_TRACKING_URI`` (a remote server) replaces the local store; ``up``
then runs no local server.

mlflow takes seconds to import, so it is imported inside the functions that need it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities import Experiment

# Addresses that mlflow's Host-header check accepts by default; an explicit
# --allowed-hosts replaces that list, so they are repeated with the bind host.
_LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")
_WILDCARD_BINDS = ("", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1")


def is_local(settings: Settings) -> bool:
    """True when tracking goes to the SQLite store under $TICKCAST_HOME (no remote server)."""
    return not settings.mlflow_tracking_uri


def server_url(settings: Settings) -> str:
    """Where this machine reaches the local server (a wildcard bind via 127.0.0.1)."""
    host = settings.mlflow_host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.mlflow_port}"


def prepare_local_store(settings: Settings) -> None:
    """Create the store directory, and the database with the right default artifact root.

    Whoever creates the database also creates experiment 0 ("Default"), and a direct
    client would give it ``./mlruns`` under its working directory as artifact root.
    Creating the database here with the server's root keeps every artifact under
    $TICKCAST_HOME however the database came to be.
    """
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    (settings.mlflow_dir / "artifacts").mkdir(exist_ok=True)
    if (settings.mlflow_dir / "mlflow.db").exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(settings.mlflow_backend_uri, settings.mlflow_artifact_root)


def configure_mlflow(settings: Settings) -> str:
    """Point this process's mlflow at the configured store; returns the tracking URI."""
    import os

    # A tqdm bar per downloaded artifact clutters command output (they are small files).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    if is_local(settings):
        prepare_local_store(settings)
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _artifact_dir_name(name: str) -> str:
    # Experiment names may hold slashes and spaces; artifacts of different runs never
    # collide anyway (each run has its own subdirectory), so a lossy slug is enough.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"


def experiment(settings: Settings, name: str) -> Experiment:
    """Get or create the experiment ``name``; pass its ``experiment_id`` to ``start_run``.

    A local experiment gets its artifact location under ``mlflow_artifact_root`` (a
    direct SQLite client would otherwise pick ``./mlruns``); a remote server chooses
    its own.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    local = is_local(settings)
    if local:
        prepare_local_store(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found
    location = f"{settings.mlflow_artifact_root}/{_artifact_dir_name(name)}" if local else None
    try:
        experiment_id = client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it between the lookup and the create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found
    return client.get_experiment(experiment_id)


def server_command(settings: Settings, bin_dir: Path | None = None) -> list[str]:
    """``mlflow server`` over the local store, as the platform's supervisor runs it."""
    mlflow = str((bin_dir or Path(sys.prefix) / "bin") / "mlflow")
    command = [
        mlflow, "server",
        "--backend-store-uri", settings.mlflow_backend_uri,
        "--default-artifact-root", settings.mlflow_artifact_root,
        "--no-serve-artifacts",
        "--host", settings.mlflow_host,
        "--port", str(settings.mlflow_port),
        # Each uvicorn worker is a ~300 MB process; one is plenty for a team's UI.
        "--workers", "1",
    ]
    host = settings.mlflow_host
    if host not in _WILDCARD_BINDS:
        # mlflow rejects Host headers other than localhost and private IPs, and
        # state-changing UI requests from non-localhost origins: reaching the UI
        # through the bind name needs both allowed explicitly.
        command += [
            "--allowed-hosts", ",".join((*_LOOPBACK_HOSTS, host, f"{host}:*")),
            "--cors-allowed-origins", f"http://{host}:{settings.mlflow_port}",
        ]
    return command


def server_environment() -> dict[str, str]:
    """Environment for the server process on top of the platform's."""
    # Job execution (on by default with a SQL store) starts a job runner and seven
    # huey consumers, ~1 GB in all, for server-side GenAI jobs TickCast never runs;
    # they also outlive a SIGTERM sent to the server process alone.
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
