"""MLflow tracking: one store shared by the platform's MLflow server and the commands.

Locally, commands (train, evaluate, ...) open the store directly (the SQLite file under
``$TICKCAST_HOME/mlflow``, or the embedded PostgreSQL's ``mlflow`` database when
``postgres_embedded``), and the server that ``tickcast up`` runs serves the very same
database and artifact directory. Commands therefore work whether or
not the server runs, and its UI shows everything they logged. The server does not
proxy artifacts (``--no-serve-artifacts``): artifact locations stay plain
``file://`` URIs that a direct client resolves on its own.

The local server runs MLflow's basic-auth app, closed by default: every request but
``/health`` needs a user, the ``admin`` user's password is generated at setup into a 0600
file (``admin_password_file``), and any other user gets no permission until an admin grants
one. So no other process on the host can move ``champion`` through the server; the
promotion path (``tickcast promote``, the DAGs) writes the store directly as the platform's
own user.

``TICKCAST_MLFLOW_TRACKING_URI`` (a remote server) replaces the local store; ``up``
then runs no local server. Its credentials (``TICKCAST_MLFLOW_TRACKING_USERNAME`` and
``..._PASSWORD``) reach mlflow as its own ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``.

mlflow takes seconds to import, so it is imported inside the functions that need it.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities import Experiment

# Addresses that mlflow's Host-header check accepts by default; an explicit
# --allowed-hosts replaces that list, so they are repeated with the bind host.
_LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")
_WILDCARD_BINDS = ("", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1")

AUTH_APP = "basic-auth"
ADMIN_USERNAME = "admin"
# What a user without a grant may do: nothing (mlflow's own default is READ for everyone).
DEFAULT_PERMISSION = "NO_PERMISSIONS"
_AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def is_local(settings: Settings) -> bool:
    """True when tracking goes to the store of this platform (SQLite under $TICKCAST_HOME, or
    the embedded PostgreSQL), not to a remote server."""
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
    uri = settings.mlflow_backend_uri
    # A server database always exists: whether its tables do is only known by asking, once per
    # process (opening the store checks its schema, a second or so).
    if uri in _prepared or (uri.startswith("sqlite:") and (settings.mlflow_dir / "mlflow.db").exists()):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, settings.mlflow_artifact_root)
    _prepared.add(uri)


# Backend URIs whose store this process has opened (prepare_local_store).
_prepared: set[str] = set()


def export_credentials(settings: Settings) -> None:
    """Hand a remote server's credentials to mlflow, which reads them from its own variables
    at each request (never logged: they live in the environment of this process only)."""
    if settings.mlflow_tracking_username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
    if settings.mlflow_tracking_password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_tracking_password.get_secret_value()


def export_http_bounds(settings: Settings) -> None:
    """Bound each request to a tracking server: mlflow reads these at every request."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_http_timeout_seconds)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_http_max_retries)


def configure_mlflow(settings: Settings) -> str:
    """Point this process's mlflow at the configured store; returns the tracking URI."""
    # A tqdm bar per downloaded artifact clutters command output (they are small files).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    if is_local(settings):
        prepare_local_store(settings)
    export_credentials(settings)
    export_http_bounds(settings)
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
    export_credentials(settings)
    export_http_bounds(settings)
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
        # Authentication and permissions (auth_config_path); the environment points at them.
        "--app-name", AUTH_APP,
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


def server_environment(settings: Settings) -> dict[str, str]:
    """Environment for the server process on top of the platform's.

    The two secrets come from the files ``prepare_server_auth`` wrote (``up`` runs it before
    it writes the supervisor's config, which is its owner's only); before that they are left
    out, and the server refuses to start with a message naming the missing variable.
    """
    env = {
        # Job execution (on by default with a SQL store) starts a job runner and seven
        # huey consumers, ~1 GB in all, for server-side GenAI jobs TickCast never runs;
        # they also outlive a SIGTERM sent to the server process alone.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config_path(settings)),
    }
    for variable, path in (("MLFLOW_AUTH_ADMIN_PASSWORD", admin_password_file(settings)),
                           ("MLFLOW_FLASK_SERVER_SECRET_KEY", _secret_key_file(settings))):
        try:
            env[variable] = path.read_text().strip()
        except FileNotFoundError:
            continue
    return env


# --- authentication of the local server -------------------------------------------------------

def auth_config_path(settings: Settings) -> Path:
    """The basic-auth app's configuration (no secret in it)."""
    return settings.mlflow_dir / "basic_auth.ini"


def auth_database_uri(settings: Settings) -> str:
    """The basic-auth app's users and permissions, beside the tracking store: a SQLite file, or
    a database of their own on the embedded PostgreSQL (their migrations would clash with the
    tracking store's in one database)."""
    if settings.postgres_embedded:
        return settings.postgres_url("mlflow_auth")
    return f"sqlite:///{settings.mlflow_dir}/basic_auth.db"


def _auth_store_exists(settings: Settings) -> bool:
    """Whether the basic-auth app has made its tables (and so maybe its admin)."""
    if not settings.postgres_embedded:
        return (settings.mlflow_dir / "basic_auth.db").exists()
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import OperationalError

    engine = create_engine(auth_database_uri(settings), connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            return inspect(connection).has_table("users")
    except OperationalError:
        # Not running yet (`up` writes this before it starts PostgreSQL): a fresh platform, or
        # the admin keeps its password until the password file is removed again with it running.
        return False
    finally:
        engine.dispose()


def admin_password_file(settings: Settings) -> Path:
    """The server's ``admin`` password (mode 0600), generated at setup."""
    return settings.home_dir / "auth" / "mlflow_admin_password"


def _secret_key_file(settings: Settings) -> Path:
    # Signs the UI's CSRF tokens; the auth app refuses to start without one.
    return settings.mlflow_dir / "flask_secret_key"


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, created 0600 beside it and renamed: never readable by others,
    never half written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _auth_config(settings: Settings) -> str:
    return "\n".join([
        "; Written by `tickcast up`; regenerated on every run, edits are lost.",
        "[mlflow]",
        f"default_permission = {DEFAULT_PERMISSION}",
        f"database_uri = {auth_database_uri(settings)}",
        f"admin_username = {ADMIN_USERNAME}",
        # The password comes from MLFLOW_AUTH_ADMIN_PASSWORD (server_environment), not from here.
        f"authorization_function = {_AUTHORIZATION_FUNCTION}",
        "grant_default_workspace_access = false",
        "",
    ])


def prepare_server_auth(settings: Settings) -> bool:
    """The basic-auth app's configuration, the admin password and the secret key; returns True
    when the admin password was generated now.

    A password file lost while the server's users survive is generated again and set on the
    existing admin (mlflow only applies a configured password when it creates the user).
    """
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    config = _auth_config(settings)
    path = auth_config_path(settings)
    if not path.is_file() or path.read_text() != config:
        _write_private(path, config)
    key = _secret_key_file(settings)
    if not key.is_file():
        _write_private(key, secrets.token_urlsafe(32) + "\n")
    password_file = admin_password_file(settings)
    if password_file.is_file():
        return False
    password = secrets.token_urlsafe(24)
    # On disk first: an admin is never left with a password nobody has.
    _write_private(password_file, password + "\n")
    if _auth_store_exists(settings):
        try:
            _set_admin_password(settings, password)
        except BaseException:
            password_file.unlink(missing_ok=True)
            raise
    return True


def _set_admin_password(settings: Settings, password: str) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_database_uri(settings))
    if store.has_user(ADMIN_USERNAME):
        store.update_user(ADMIN_USERNAME, password=password)
