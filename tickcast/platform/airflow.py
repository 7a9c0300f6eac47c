"""Airflow under the platform: its environment, its components and their health.

Airflow lives in an environment of its own (``airflow/``, created by the bootstrap from its
own lock: Airflow pins fastapi below what the API uses). Its DAGs (``airflow/dags``) are thin:
each task runs in the platform's environment (``.venv``), so no domain code is imported by
Airflow itself. Every component is started through ``tickcast airflow run COMPONENT``, which
derives Airflow's whole configuration from the platform's settings (``environment``), creates
or upgrades the metadata database once, under a lock, and then becomes the component.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tickcast.core.settings import REPO_ROOT, Settings
from tickcast.platform.processes import client_host

AIRFLOW_PROJECT = REPO_ROOT / "airflow"
DAGS_FOLDER = AIRFLOW_PROJECT / "dags"
# The components `airflow standalone` would run, each a program of its own under supervisord
# (named airflow-<component>): restarted on its own, logged on its own.
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Airflow's log server binds every interface (and has no setting for it); every component runs
# on this machine and writes its task logs where the api-server reads them, so none is needed.
COMPONENT_ARGS = {"scheduler": ("--skip-serve-logs",), "triggerer": ("--skip-serve-logs",)}
# Where SimpleAuthManager writes the admin's generated password (under AIRFLOW_HOME).
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


class AirflowMissing(RuntimeError):
    """Airflow's environment is not there (``make bootstrap`` creates it)."""


def airflow_bin() -> Path:
    return AIRFLOW_PROJECT / ".venv" / "bin"


def airflow_executable() -> Path:
    path = airflow_bin() / "airflow"
    if not path.exists():
        raise AirflowMissing(f"{path} not found: run `make bootstrap` (it creates Airflow's environment "
                             "from airflow/uv.lock)")
    return path


def program_name(component: str) -> str:
    return f"airflow-{component}"


def api_url(settings: Settings) -> str:
    return f"http://{client_host(settings.airflow_host)}:{settings.airflow_port}"


def password_file(settings: Settings) -> Path:
    return settings.airflow_dir / PASSWORD_FILE


def database_url(settings: Settings) -> str:
    if settings.airflow_database_url is not None:
        return settings.airflow_database_url.get_secret_value()
    if settings.postgres_embedded and _has_async_postgres_driver():
        # psycopg2: the driver Airflow's own environment has (and Airflow tests with). Airflow
        # derives its async engine's URL from it (asyncpg).
        return settings.postgres_url("airflow", driver="psycopg2")
    return f"sqlite:///{settings.airflow_dir / 'airflow.db'}"


def _has_async_postgres_driver() -> bool:
    """Whether Airflow's environment has asyncpg: Airflow 3 opens an async engine beside the
    other and will not start on PostgreSQL without it, so its metadata stays in SQLite until the
    environment has it (airflow/pyproject.toml)."""
    return any((airflow_bin().parent / "lib").glob("python*/site-packages/asyncpg-*.dist-info"))


def environment(settings: Settings) -> dict[str, str]:
    """Airflow's configuration for this platform, as ``AIRFLOW__*`` variables. Deterministic
    (no value from the caller's environment but PATH), so supervisord's config is stable."""
    home = settings.airflow_dir
    url = api_url(settings)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The platform's DAGs are its schedule (maintenance runs nowhere else): on from the start.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(settings),
        "AIRFLOW__API__HOST": settings.airflow_host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # The DAG files find the platform's environment and its CLI here.
        "TICKCAST_PYTHON": str(REPO_ROOT / ".venv" / "bin" / "python"),
        "TICKCAST_BIN": str(REPO_ROOT / ".venv" / "bin" / "tickcast"),
        # Components launch one another as `airflow ...` from PATH; the JVM (Spark in tasks)
        # is found on the system path.
        "PATH": os.pathsep.join([str(airflow_bin()), str(REPO_ROOT / ".venv" / "bin"), "/usr/local/bin", "/usr/bin",
                                 "/bin"]),
    }


def migrate(settings: Settings) -> None:
    """Create or upgrade the metadata database (and Airflow's generated config, with the secrets
    every component must share), once: the components start together and wait for the first."""
    home = settings.airflow_dir
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    version = _airflow_version()
    with (home / ".migrate.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == f"{version}\n{database_url(settings)}":
            return
        done = subprocess.run([str(airflow_executable()), "db", "migrate"], env={**os.environ, **environment(settings)},
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
        marker.write_text(f"{version}\n{database_url(settings)}")


def _airflow_version() -> str:
    # The installed distribution's metadata, read without importing Airflow into this process.
    found = sorted((airflow_bin().parent / "lib").glob("python*/site-packages/apache_airflow-*.dist-info"))
    return found[-1].name.removeprefix("apache_airflow-").removesuffix(".dist-info") if found else "unknown"


def exec_component(settings: Settings, component: str) -> None:
    """Become the Airflow component (never returns)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown Airflow component {component!r}; one of {', '.join(COMPONENTS)}")
    migrate(settings)
    executable = str(airflow_executable())
    os.execve(executable, [executable, component, *COMPONENT_ARGS.get(component, ())],
              {**os.environ, **environment(settings)})


def cli_output(settings: Settings, args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The Airflow CLI's answer (captured) with this platform's configuration."""
    return subprocess.run([str(airflow_executable()), *args], env={**os.environ, **environment(settings)},
                          capture_output=True, text=True, timeout=timeout)


def cli_json(done: subprocess.CompletedProcess) -> Any:
    """The JSON document an Airflow command printed with ``-o json`` (its log lines come first)."""
    import json

    for line in reversed(done.stdout.splitlines()):
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise ValueError(f"no JSON in Airflow's answer: {done.stdout[-300:]!r}")


def trigger_first_retrain(settings: Settings, deadline: float, say: Callable[[str], None]) -> str | None:
    """Ask for one `retrain` run if the retrain experiment's models have no champion and the DAG
    has never run (so a fresh demo platform reaches a served champion by itself, and a
    restarted one does not train again). Waits for the dag-processor to have parsed the DAG.
    Returns the run id triggered, or None."""
    from tickcast.models import registry, tracking
    from tickcast.models.lifecycle import retrain_config

    config = retrain_config(settings)
    tracking.configure_mlflow(settings)
    client = registry.client()
    names = [registry.registered_name(arch, config.interval) for arch in config.evaluation.models]
    if all(registry.champion(client, name) is not None for name in names):
        return None
    while True:
        runs = cli_output(settings, ["dags", "list-runs", "retrain", "-o", "json"])
        if runs.returncode == 0:
            break
        if time.monotonic() > deadline:
            say(f"could not ask Airflow for a retrain run (the DAG was not parsed in time): {runs.stderr[-300:]}")
            return None
        time.sleep(3)
    if cli_json(runs):
        return None  # it ran before: the weekly schedule and the monitor take it from here
    done = cli_output(settings, ["dags", "trigger", "retrain", "-o", "json"])
    if done.returncode != 0:
        say(f"could not trigger the retrain DAG: {done.stderr[-300:]}")
        return None
    found = cli_json(done)
    run_id = found[0].get("dag_run_id") if isinstance(found, list) and found else "?"
    say(f"no champion yet for {', '.join(names)}: triggered the retrain DAG on {config.name} ({run_id})")
    return run_id


def run_cli(settings: Settings, args: list[str]) -> int:
    """The Airflow CLI with this platform's configuration (``tickcast airflow cli -- dags list``)."""
    migrate(settings)
    return subprocess.run([str(airflow_executable()), *args], env={**os.environ, **environment(settings)}).returncode


def health(settings: Settings) -> dict | None:
    """The api-server's health document, None while it does not answer."""
    import httpx

    try:
        response = httpx.get(f"{api_url(settings)}/api/v2/monitor/health", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def component_health(settings: Settings, component: str) -> str | None:
    """None when ``component`` is healthy, else what it is still waiting for."""
    document = health(settings)
    if document is None:
        return f"GET {api_url(settings)}/api/v2/monitor/health not 200 yet"
    key = {"api-server": "metadatabase", "dag-processor": "dag_processor"}.get(component, component)
    status = (document.get(key) or {}).get("status")
    return None if status == "healthy" else f"{key} is {status or 'not reported'} in Airflow's health check"


class AirflowUnavailable(RuntimeError):
    """Airflow's API cannot be read (not running, not reachable, no credentials yet)."""


@dataclass(frozen=True)
class DagRun:
    """One run of a DAG, as Airflow's REST API reports it (times in UTC)."""

    dag_id: str
    run_id: str
    run_type: str
    state: str
    run_after: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    # Airflow's own figure for a finished run; None while it runs or before it starts.
    duration_seconds: float | None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def parse_runs(document: Any) -> list[DagRun]:
    """The runs of a ``GET /api/v2/dags/{dag_id}/dagRuns`` answer."""
    if not isinstance(document, dict) or not isinstance(document.get("dag_runs"), list):
        raise AirflowUnavailable("Airflow's API answered without a list of DAG runs")
    runs = []
    for item in document["dag_runs"]:
        duration = item.get("duration")
        start, end = _instant(item.get("start_date")), _instant(item.get("end_date"))
        if duration is None and start is not None and end is not None:
            duration = (end - start).total_seconds()
        runs.append(DagRun(
            dag_id=str(item.get("dag_id")), run_id=str(item.get("dag_run_id")), run_type=str(item.get("run_type")),
            state=str(item.get("state")), run_after=_instant(item.get("run_after")), start_date=start, end_date=end,
            duration_seconds=float(duration) if isinstance(duration, int | float) else None,
        ))
    return runs


class AirflowApi:
    """Airflow's REST API (``/api/v2``) as the platform's admin, whose password Airflow's simple
    auth manager generated (``password_file``). Synchronous; holds its token until refused."""

    def __init__(self, settings: Settings, timeout: float = 5.0):
        import httpx

        self.settings = settings
        self.url = api_url(settings)
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None

    def _login(self) -> str:
        import json

        path = password_file(self.settings)
        try:
            passwords = json.loads(path.read_text())
        except (OSError, ValueError):
            raise AirflowUnavailable(f"Airflow has not written its admin password yet ({path})") from None
        if not isinstance(passwords, dict) or not passwords:
            raise AirflowUnavailable(f"no user in {path}")
        username = "admin" if "admin" in passwords else next(iter(passwords))
        response = self._request("POST", "/auth/token", json={"username": username, "password": passwords[username]},
                                 authorised=False)
        token = response.json().get("access_token") if response.status_code in (200, 201) else None
        if not token:
            raise AirflowUnavailable(f"Airflow refused the admin's sign-in (HTTP {response.status_code})")
        return str(token)

    def _request(self, method: str, path: str, authorised: bool = True, **options: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self._token}"} if authorised and self._token else {}
        try:
            return self._http.request(method, path, headers=headers, **options)
        except httpx.HTTPError as exc:
            raise AirflowUnavailable(f"Airflow at {self.url} is not answering ({type(exc).__name__})") from exc

    def get(self, path: str, **params: Any) -> Any:
        """A JSON document of the API, signing in first and again when the token has expired."""
        for attempt in range(2):
            if self._token is None:
                self._token = self._login()
            response = self._request("GET", path, params=params)
            if response.status_code in (401, 403) and attempt == 0:
                self._token = None
                continue
            if response.status_code != 200:
                raise AirflowUnavailable(f"Airflow answered HTTP {response.status_code} to GET {path}")
            try:
                return response.json()
            except ValueError:
                raise AirflowUnavailable(f"Airflow answered GET {path} without JSON") from None
        raise AirflowUnavailable("Airflow refused the admin's token")  # pragma: no cover - the loop returns or raises

    def dag_ids(self) -> list[str]:
        """The platform's DAGs (tag ``tickcast``) that Airflow has parsed."""
        document = self.get("/api/v2/dags", tags="tickcast", limit=100)
        return sorted(str(d["dag_id"]) for d in document.get("dags") or [])

    def recent_runs(self, per_dag: int = 5) -> dict[str, list[DagRun]]:
        """Each DAG's newest runs, newest first (a DAG that never ran: an empty list)."""
        return {dag_id: parse_runs(self.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="-run_after", limit=per_dag))
                for dag_id in self.dag_ids()}

    def close(self) -> None:
        self._http.close()
