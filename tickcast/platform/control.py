"""setup / up / down: bring the whole platform up under supervisord and back down."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from tickcast.catalog import tables
from tickcast.catalog.progress import progress_path, read_progress
from tickcast.core.settings import Settings
from tickcast.models import tracking
from tickcast.platform import broker, jmx
from tickcast.platform.permissions import secure_home
from tickcast.platform.processes import client_host
from tickcast.platform.supervisor import (
    PROGRAM_ORDER,
    STOP_WAVES,
    PlatformError,
    Supervisor,
    program_log,
    programs,
    tail,
    write_config,
)

# Supervisor states in which a program is alive or about to be (BACKOFF: retrying a start).
ALIVE = {"STARTING", "RUNNING", "BACKOFF"}
# States that will not fix themselves: FATAL means supervisord gave up retrying.
DEAD = {"FATAL", "STOPPED", "UNKNOWN"}


def _say(console: Console, message: str) -> None:
    console.print(f"[bold blue]==>[/] {message}", highlight=False)


def setup(settings: Settings) -> None:
    """JVM jars and the $TICKCAST_HOME tree; quick when both are there already."""
    from tickcast.platform.jars import ensure_jars

    ensure_jars(settings)
    secure_home(settings.home_dir)
    for path in (
        settings.home_dir, tables.delta_dir(settings), settings.checkpoint_dir, settings.run_dir,
        settings.log_dir, settings.online_store_path.parent,
    ):
        path.mkdir(parents=True, exist_ok=True)
    if tracking.is_local(settings):
        # SQLite creates the database file but not its directory.
        settings.mlflow_dir.mkdir(exist_ok=True)
    if settings.kafka_embedded and settings.kafka_embedded_auth:
        from tickcast.core.kafka_auth import ensure_credentials

        # Before the broker's storage is formatted: its SCRAM users are made from this file.
        ensure_credentials(settings.kafka_credentials_path)
    if settings.postgres_embedded:
        from tickcast.platform import postgres

        # initdb once (seconds); the socket's directory 0700, the server's only access control.
        if not postgres.missing_binary_message():
            postgres.prepare(postgres.Layout.for_settings(settings))
    if settings.redis_embedded:
        from tickcast.platform import redis_server

        # Before anything reads the embedded Redis's URLs (they carry it).
        redis_server.ensure_password(settings.redis_password_path)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((client_host(host), port)) == 0


def _ports(settings: Settings, name: str) -> list[tuple[int, str]]:
    if name.startswith("spark-"):
        from tickcast.platform import spark_cluster

        cluster = spark_cluster.layout_for(settings)
        if name == spark_cluster.MASTER_PROGRAM:
            return [(cluster.port, "TICKCAST_SPARK_MASTER_PORT"), (cluster.webui_port, "TICKCAST_SPARK_MASTER_WEBUI_PORT")]
        index = int(name.removeprefix(spark_cluster.WORKER_PROGRAM_PREFIX))
        # The workers' web UIs follow the master's.
        return [(cluster.worker_webui_ports[index - 1], "TICKCAST_SPARK_MASTER_WEBUI_PORT")]
    if broker.is_program(name):
        # A cluster's node i on kafka_broker_port + 2i and kafka_controller_port + 2i.
        node = broker.program_layout(settings, name)
        return [(node.port, "TICKCAST_KAFKA_BROKER_PORT"), (node.controller_port, "TICKCAST_KAFKA_CONTROLLER_PORT"),
                *jmx.ports(settings, node.node_id)]
    return {
        "mlflow": [(settings.mlflow_port, "TICKCAST_MLFLOW_PORT")],
        "redis": [(settings.redis_port, "TICKCAST_REDIS_PORT")],
        "api": [(settings.api_port, "TICKCAST_API_PORT")],
        "dashboard": [(settings.dashboard_port, "TICKCAST_DASHBOARD_PORT")],
        "airflow-api-server": [(settings.airflow_port, "TICKCAST_AIRFLOW_PORT")],
        "metrics": [(settings.pipeline_metrics_port, "TICKCAST_PIPELINE_METRICS_PORT")],
        "prometheus": [(settings.prometheus_port, "TICKCAST_PROMETHEUS_PORT")],
    }.get(name, [])


def _http_ok(url: str) -> bool:
    import httpx

    try:
        # Our own process on loopback, maybe behind a self-signed certificate: is it up, not who is it.
        return httpx.get(url, timeout=2.0, verify=False).status_code == 200
    except httpx.HTTPError:
        return False


def probe(settings: Settings, name: str, info: dict[str, Any]) -> str | None:
    """None when ``name`` is healthy, else what it is still waiting for."""
    state = info["statename"]
    if state != "RUNNING":
        return f"process {state.lower()}"
    if broker.is_program(name):
        port = broker.program_layout(settings, name).port
        return None if port_open("127.0.0.1", port) else f"port {port} not open yet"
    if name == "postgres":
        from tickcast.platform import postgres

        return postgres.not_ready(postgres.Layout.for_settings(settings))
    if name == "redis":
        from tickcast.platform import redis_server

        return redis_server.ping(settings)
    if name.startswith("spark-"):
        from tickcast.platform import spark_cluster

        return spark_cluster.probe(spark_cluster.layout_for(settings), name)
    if name == "mlflow":
        url = f"{tracking.server_url(settings)}/health"
        return None if _http_ok(url) else f"GET {url} not 200 yet"
    if name == "api":
        url = f"{settings.api_url}/healthz"
        return None if _http_ok(url) else f"GET {url} not 200 yet"
    if name == "dashboard":
        url = f"{settings.dashboard_url}/healthz"
        return None if _http_ok(url) else f"GET {url} not 200 yet"
    if name == "metrics":
        url = f"http://127.0.0.1:{settings.pipeline_metrics_port}/metrics"
        return None if _http_ok(url) else f"GET {url} not 200 yet"
    if name == "prometheus":
        from tickcast.platform import prometheus

        url = f"{prometheus.base_url(settings)}/-/ready"
        return None if _http_ok(url) else f"GET {url} not 200 yet"
    if name.startswith("airflow-"):
        from tickcast.platform import airflow

        return airflow.component_health(settings, name.removeprefix("airflow-"))
    if name in ("ingest", "bars", "alerts"):
        path = progress_path(settings, name)
        try:
            # Written by this run of the job, not left over from a previous one.
            fresh = path.stat().st_mtime >= info["start"] - 1
        except OSError:
            fresh = False
        return None if fresh and read_progress(settings) else f"no streaming progress in {path} yet"
    return None


def _failure(settings: Settings, name: str, headline: str) -> PlatformError:
    log = program_log(settings, name)
    lines = tail(log, 30)
    detail = f"last lines of {log}:\n{lines}" if lines else f"{log} is empty"
    return PlatformError(headline, detail)


def wait_healthy(
    settings: Settings,
    supervisor: Supervisor,
    names: Sequence[str],
    deadline: float,
    console: Console,
) -> None:
    pending = list(names)
    reasons: dict[str, str] = {}
    started = time.monotonic()
    next_note = started + 15
    with console.status("") as spinner:
        while pending:
            infos = supervisor.processes()
            for name in list(pending):
                info = infos[name]
                if info["statename"] in DEAD:
                    why = info.get("spawnerr") or info.get("description") or ""
                    raise _failure(
                        settings, name,
                        f"{name} is {info['statename']}{': ' + why if why else ''}",
                    )
                reason = probe(settings, name, info)
                if reason is None:
                    pending.remove(name)
                    console.print(f"    [green]ok[/] {name}", highlight=False)
                else:
                    reasons[name] = reason
            if not pending:
                break
            now = time.monotonic()
            summary = "; ".join(f"{n}: {reasons[n]}" for n in pending)
            spinner.update(f"waiting ({now - started:.0f}s) for {summary}")
            if not console.is_terminal and now >= next_note:
                console.print(f"    still waiting ({now - started:.0f}s) for {summary}", highlight=False)
                next_note = now + 15
            if now > deadline:
                first = pending[0]
                err = _failure(
                    settings, first,
                    f"timed out waiting for {', '.join(pending)} ({summary})",
                )
                for other in pending[1:]:
                    extra = _failure(settings, other, "")
                    err.detail += "\n" + extra.detail
                raise err
            time.sleep(0.5)


def _select(settings: Settings, only: Sequence[str] | None) -> tuple[list[str], list[str]]:
    configured = [p.name for p in programs(settings)]
    if not only:
        return configured, configured
    unknown = sorted(set(only) - set(configured))
    if unknown:
        raise PlatformError(
            f"unknown program(s) {', '.join(unknown)}; this configuration runs {', '.join(configured)}"
        )
    return [n for n in configured if n in only], configured


def _start(settings: Settings, supervisor: Supervisor, name: str, console: Console) -> None:
    info = supervisor.processes()[name]
    if info["statename"] in ALIVE:
        console.print(f"    {name} already {info['statename'].lower()}", highlight=False)
        return
    if name == "prometheus":
        from tickcast.platform import prometheus

        missing = prometheus.missing_binary_message()
        if missing:
            raise PlatformError(f"cannot start prometheus: {missing}")
    if name == "postgres":
        from tickcast.platform import postgres

        missing = postgres.missing_binary_message()
        if missing:
            raise PlatformError(f"cannot start postgres: {missing}")
    if name == "redis":
        from tickcast.platform import redis_server

        missing = redis_server.missing_binary_message()
        if missing:
            raise PlatformError(f"cannot start redis: {missing}")
    for port, variable in _ports(settings, name):
        if port_open("127.0.0.1", port):
            raise PlatformError(
                f"cannot start {name}: port {port} is already in use by another process "
                f"(stop it, or choose another port with {variable})"
            )
    supervisor.start(name)
    console.print(f"    started {name} (log: {program_log(settings, name)})", highlight=False)


def up(
    settings: Settings,
    only: Sequence[str] | None = None,
    timeout: float = 300.0,
    console: Console | None = None,
) -> list[str]:
    """Start what is not running yet, in dependency order; return once all is healthy.

    ``only`` limits the programs started (and waited for). Returns the program names.
    """
    from tickcast.catalog.topics import ensure_topics

    console = console or Console(stderr=True, soft_wrap=True)
    # The health probes poll over HTTP; httpx would log every poll at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    deadline = time.monotonic() + timeout
    _say(console, f"setting up {settings.home_dir}")
    setup(settings)
    selected, configured = _select(settings, only)

    kafka_nodes = [name for name in configured if broker.is_program(name)]
    kafka_selected = [name for name in selected if broker.is_program(name)]
    for name in kafka_selected:
        broker.prepare(settings, broker.program_layout(settings, name))
    if "dashboard" in selected:
        from tickcast.auth.users import UserStore, ensure_initial_user

        # Like Airflow's admin: a first user with a generated password, so a fresh platform can
        # be signed in to; `tickcast users create` adds the real ones.
        if ensure_initial_user(UserStore(settings.dashboard_users_path), settings.dashboard_admin_password_file):
            _say(console, f"dashboard user admin created; its password is in {settings.dashboard_admin_password_file}")
    if "mlflow" in configured:
        # Before the supervisor's config, which hands the server its secrets.
        if tracking.prepare_server_auth(settings):
            _say(console, f"MLflow user admin created; its password is in {tracking.admin_password_file(settings)}")
    if "prometheus" in configured:
        from tickcast.platform import prometheus

        prometheus.write_scrape_config(settings)
        prometheus.data_dir(settings).mkdir(parents=True, exist_ok=True)
    if "redis" in configured:
        from tickcast.platform import redis_server

        redis_server.write_config(settings)
    write_config(settings)
    supervisor = Supervisor(settings)
    if supervisor.is_running():
        changes = supervisor.update()
        touched = changes["added"] + changes["changed"] + changes["removed"]
        _say(console, "supervisord already running" + (
            f"; config changed for {', '.join(touched)}" if touched else ""))
    else:
        _say(console, f"starting supervisord (socket {supervisor.paths.socket})")
        supervisor.start_daemon()

    if "postgres" in selected:
        from tickcast.platform import postgres

        # Before MLflow, the alert engine, Airflow and the API, which keep their state in it.
        _say(console, "starting PostgreSQL")
        _start(settings, supervisor, "postgres", console)
        wait_healthy(settings, supervisor, ["postgres"], deadline, console)
        made = postgres.ensure_databases(postgres.Layout.for_settings(settings), settings.POSTGRES_DATABASES)
        console.print(f"    databases {', '.join(settings.POSTGRES_DATABASES)}"
                      + (f" (created {', '.join(made)})" if made else " (all existed)"), highlight=False)
    if "mlflow" in configured and tracking.is_local(settings):
        # The store's tables made once, here, before the server, the scorer, the API and Airflow's
        # first retrain open it at once: two first openings of a new store race on its migrations
        # (a fresh SQLite store was left half-migrated, `_alembic_tmp_experiments already exists`).
        tracking.prepare_local_store(settings)
    if "redis" in selected:
        # Before the parts that keep their state in it, so that none starts on an outage.
        _say(console, "starting Redis")
        _start(settings, supervisor, "redis", console)
        wait_healthy(settings, supervisor, ["redis"], deadline, console)
    needs_kafka = bool(kafka_selected) or any(name in selected for name in ("ingest", "scorer", "alerts", "feed"))
    if kafka_selected:
        _say(console, "starting the Kafka broker" if len(kafka_nodes) == 1 else
             f"starting the Kafka nodes {', '.join(kafka_selected)}")
        for name in kafka_selected:
            _start(settings, supervisor, name, console)
        wait_healthy(settings, supervisor, kafka_selected, deadline, console)
    elif needs_kafka and kafka_nodes:
        infos = supervisor.processes()
        stopped = [name for name in kafka_nodes if infos[name]["statename"] != "RUNNING"]
        if stopped:
            raise PlatformError(f"{', '.join(stopped)} not running; start it too (drop --only, or add "
                                f"{' '.join('--only ' + name for name in stopped)})")
    if needs_kafka and len(kafka_nodes) > 1:
        # A port open is a node up, not a cluster: topics of replication factor 3 need three
        # registered brokers.
        registered = broker.wait_registered(settings, timeout=max(deadline - time.monotonic(), 5.0))
        console.print(f"    brokers {', '.join(map(str, registered))} registered", highlight=False)
    if needs_kafka and kafka_nodes and settings.kafka_uses_embedded_auth:
        from tickcast.platform import broker_auth

        _say(console, "granting each Kafka principal its ACLs")
        broker_auth.ensure_access(settings, timeout=max(deadline - time.monotonic(), 5.0))
    if needs_kafka:
        _say(console, f"creating topics on {settings.kafka_bootstrap_servers}")
        remaining = max(deadline - time.monotonic(), 5.0)
        created = ensure_topics(settings, timeout=remaining)
        fresh = [name for name, new in created.items() if new]
        console.print(
            f"    topics {', '.join(created)}" + (f" (created {', '.join(fresh)})" if fresh else " (all existed)"),
            highlight=False,
        )

    # The streams first, the batch side once they are healthy: Airflow's first runs (a retrain
    # that trains two networks, alt_data, maintenance) would otherwise take the two cores the
    # streaming queries need to start.
    spark = [name for name in selected if name.startswith("spark-")]
    if spark:
        from tickcast.platform import spark_cluster

        # Before the Spark applications, which would otherwise wait for executors.
        _say(console, f"starting the Spark standalone cluster ({spark_cluster.layout_for(settings).master_url})")
        spark_cluster.prepare(spark_cluster.layout_for(settings))
        for name in spark:
            _start(settings, supervisor, name, console)
        wait_healthy(settings, supervisor, spark, deadline, console)
    rest = [name for name in selected
            if name not in ("postgres", "redis") and not broker.is_program(name) and name not in spark]
    streams = [name for name in rest if not name.startswith("airflow")]
    batch = [name for name in rest if name.startswith("airflow")]
    for group in (streams, batch):
        if not group:
            continue
        _say(console, f"starting {', '.join(group)}")
        for name in sorted(group, key=PROGRAM_ORDER.index):
            _start(settings, supervisor, name, console)
        _say(console, "waiting until healthy")
        wait_healthy(settings, supervisor, group, deadline, console)
    if batch:
        from tickcast.platform import airflow

        try:
            airflow.trigger_first_retrain(settings, deadline, lambda message: _say(console, message))
        except Exception as exc:  # the platform is up either way; the weekly schedule trains later
            _say(console, f"could not check for a first retrain run ({exc.__class__.__name__}: {exc}); "
                          "`tickcast airflow cli dags trigger retrain` asks for one")
    return selected


def urls(settings: Settings, names: Sequence[str]) -> list[tuple[str, str]]:
    rows = []
    if "api" in names:
        rows.append(("API", f"{settings.api_url}/docs"))
    if "dashboard" in names:
        rows.append(("Dashboard", settings.dashboard_url))
        rows.append(("Dashboard login", f"admin; the password is in {settings.dashboard_admin_password_file}"
                     if settings.dashboard_admin_password_file.exists() else "`tickcast users create NAME`"))
    if "prometheus" in names:
        from tickcast.platform import prometheus

        rows.append(("Prometheus", prometheus.base_url(settings)))
    if "mlflow" in names:
        rows.append(("MLflow", tracking.server_url(settings)))
        rows.append(("MLflow login", f"admin; the password is in {tracking.admin_password_file(settings)}"))
    elif not tracking.is_local(settings):
        rows.append(("MLflow", str(settings.mlflow_tracking_uri)))
    if "airflow-api-server" in names:
        from tickcast.platform import airflow

        rows.append(("Airflow", airflow.api_url(settings)))
        rows.append(("Airflow login", f"admin; the password is in {airflow.password_file(settings)}"))
    rows.append(("Kafka bootstrap", settings.kafka_bootstrap_servers + (
        f" (SASL/SCRAM-SHA-512; each principal's password in {settings.kafka_credentials_path})"
        if settings.kafka_uses_embedded_auth else "")))
    rows.append(("Logs", str(settings.log_dir)))
    return rows


def down(settings: Settings, console: Console | None = None) -> bool:
    """Stop every program (reverse start order) and supervisord. False if nothing ran."""
    console = console or Console(stderr=True, soft_wrap=True)
    supervisor = Supervisor(settings)
    if not supervisor.is_running():
        return False
    priorities = supervisor.priorities()
    infos = supervisor.processes()
    alive = [name for name in infos if infos[name]["statename"] in ALIVE]
    stopwait = {program.name: program.stopwaitsecs for program in programs(settings)}
    upper = None
    for lowest in STOP_WAVES:
        wave = sorted((name for name in alive if priorities.get(name, 0) >= lowest
                       and (upper is None or priorities.get(name, 0) < upper)),
                      key=lambda name: (PROGRAM_ORDER.index(name) if name in PROGRAM_ORDER else len(PROGRAM_ORDER), name))
        upper = lowest
        if not wave:
            continue
        _say(console, f"stopping {', '.join(wave)}")
        # supervisord SIGKILLs each after its stopwaitsecs; the margin covers its own polling.
        stuck = supervisor.stop_all(wave, timeout=max(stopwait.get(name, 60) for name in wave) + 30)
        if stuck:  # supervisord's own shutdown, below, kills what is left
            _say(console, f"{', '.join(stuck)} still stopping; going on (logs: {settings.log_dir})")
    leftovers = stop_leftovers(supervisor.paths.pidfile)
    if leftovers:
        _say(console, f"stopped {len(leftovers)} process(es) the programs left behind: {', '.join(leftovers)}")
    _say(console, "stopping supervisord")
    supervisor.shutdown()
    return True


def stop_leftovers(pidfile: Path, grace_seconds: float = 15.0) -> list[str]:
    """Stop what the stopped programs left running in supervisord's session: Airflow's
    LocalExecutor runs each task under a supervisor process in a process group of its own, so
    stopping the scheduler does not reach a task in flight (a retrain's training went on after
    `make down`). SIGTERM to each such group, SIGKILL after ``grace_seconds``; returns what
    was stopped."""
    import signal

    import psutil

    try:
        session = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return []
    found = []
    for process in psutil.process_iter(["pid", "name"]):
        try:
            if process.pid != session and os.getsid(process.pid) == session and os.getpgid(process.pid) == process.pid:
                found.append(process)
        except (OSError, psutil.Error):
            continue
    names = []
    for process in found:
        try:
            command = process.cmdline()
            # The program's own name, not its path: the log line stays short wherever the venv is.
            names.append(" ".join([Path(command[0]).name, *command[1:]])[:120] if command else process.name())
            os.killpg(process.pid, signal.SIGTERM)
        except (OSError, psutil.Error):
            pass
    _, alive = psutil.wait_procs(found, timeout=grace_seconds)
    for process in alive:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
    return names
