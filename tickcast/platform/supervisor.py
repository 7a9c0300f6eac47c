"""The supervisord side of the platform: program definitions, config file, XML-RPC client.

supervisord runs every long-lived TickCast process. ``tickcast up`` writes its config
under ``$TICKCAST_HOME/run`` and talks to it over a unix socket there, the same way
``supervisorctl`` does (``supervisor.xmlrpc.SupervisorTransport``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickcast.core.settings import Settings
from tickcast.platform.permissions import PRIVATE_UMASK

# Every program is started explicitly by `tickcast up`, in dependency order, so
# supervisord itself autostarts nothing; priorities still order `stopAllProcesses`
# and shutdown (feed and ingest stop before the broker they talk to).
PROGRAM_ORDER = ("postgres", "redis", "kafka",
                 # A cluster's Kafka nodes (broker.program_name), as many as settings.kafka_nodes allows.
                 *(f"kafka-{i}" for i in range(1, 10)), "mlflow", "spark-master",
                 # The Spark workers, as many as settings.spark_workers allows (spark_cluster.worker_program).
                 *(f"spark-worker-{i}" for i in range(1, 17)), "ingest", "bars", "scorer", "api", "dashboard", "alerts",
                 "metrics", "prometheus", "maintain", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "feed")

# `down` stops the programs in waves, each wave at once: first everything that uses the engines
# (priority 20 and up: the streams, the services, Airflow, the feed), then MLflow and Spark, then
# the Kafka nodes, then the data stores (PostgreSQL, Redis). A program waits only for those it
# depends on, not for every program before it: one at a time took 3 minutes on the cluster profile.
STOP_WAVES = (20, 15, 10, 0)

# Linux limit for AF_UNIX paths is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 100


class PlatformError(RuntimeError):
    """A platform operation failed; ``detail`` holds log lines worth showing."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    priority: int
    # Seconds a process must stay up to count as started (exits sooner are retried).
    startsecs: int = 5
    startretries: int = 3
    stopwaitsecs: int = 20
    autorestart: bool = True
    stopasgroup: bool = True
    killasgroup: bool = True
    # Exit codes that count as a clean stop.
    exitcodes: tuple[int, ...] = (0,)
    # What supervisord stops it with.
    stopsignal: str = "TERM"
    # Added to the TICKCAST_* environment every program gets.
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Paths:
    config: Path
    socket: Path
    pidfile: Path
    logfile: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> Paths:
        run = settings.run_dir
        socket = run / "supervisor.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha1(str(settings.home_dir).encode()).hexdigest()[:16]
            socket = Path("/tmp") / f"tickcast-{digest}.sock"
        return cls(
            config=run / "supervisord.conf",
            socket=socket,
            pidfile=run / "supervisord.pid",
            logfile=settings.log_dir / "supervisord.log",
        )


def venv_bin() -> Path:
    """bin/ of the environment running this code (the repo's .venv under `make`)."""
    return Path(sys.prefix) / "bin"


def program_log(settings: Settings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def programs(settings: Settings, bin_dir: Path | None = None) -> list[Program]:
    """Every program this configuration runs, in start order."""
    from tickcast.models import tracking
    from tickcast.platform import airflow, broker, prometheus

    tickcast = str((bin_dir or venv_bin()) / "tickcast")
    result: list[Program] = []
    if settings.postgres_embedded:
        from tickcast.platform import postgres

        # First: MLflow, the alert engine, Airflow and the API keep their state in it. INT is
        # PostgreSQL's fast shutdown (TERM waits for every client to disconnect), sent to the
        # postmaster alone, which stops its backends itself.
        result.append(Program("postgres", postgres.server_command(postgres.Layout.for_settings(settings)),
                              priority=5, startsecs=2, stopwaitsecs=60, stopsignal="INT", stopasgroup=False))
    if settings.redis_embedded:
        from tickcast.platform import redis_server

        # First: the scorer, the API and the stream's Feast pushes read and write it from their start.
        result.append(Program("redis", redis_server.server_command(settings), priority=6, startsecs=2,
                              stopwaitsecs=30))
    if settings.kafka_embedded:
        # One program per node (`kafka`, or `kafka-1`..`kafka-N` in a cluster): each is
        # restarted by itself, as a node of a real cluster would be.
        result += [
            Program(
                broker.program_name(settings, layout),
                broker.broker_command(settings, layout),
                priority=10,
                startsecs=3,
                stopwaitsecs=60,
                stopasgroup=False,
                exitcodes=(0, 143),  # the JVM exits 143 after a clean shutdown on TERM
            )
            for layout in broker.cluster_layouts(settings)
        ]
    if tracking.is_local(settings):
        result.append(
            Program(
                "mlflow",
                tracking.server_command(settings, bin_dir),
                priority=15,
                # mlflow imports for ~15 s before uvicorn listens; the health probe
                # (not startsecs) is what waits for that.
                startsecs=5,
                environment=tracking.server_environment(settings),
            )
        )
    if settings.spark_workers > 0:
        from tickcast.platform import spark_cluster

        # The standalone cluster the Spark applications are submitted to (spark_master). The
        # workers register with the master by themselves, retrying until it answers.
        cluster = spark_cluster.layout_for(settings)
        result.append(Program(spark_cluster.MASTER_PROGRAM, spark_cluster.master_command(cluster), priority=16,
                              startsecs=3, stopwaitsecs=30, exitcodes=(0, 143),
                              environment=spark_cluster.environment(cluster)))
        result += [Program(spark_cluster.worker_program(i), spark_cluster.worker_command(cluster, i), priority=17,
                           startsecs=3, stopwaitsecs=30, exitcodes=(0, 143),
                           environment=spark_cluster.environment(cluster, i))
                   for i in range(1, settings.spark_workers + 1)]
    result += [
        # Each ingest query is Python driving Spark's JVM (a child that exits when Python
        # closes its stdin). TERM goes to Python only so it can stop its queries cleanly; the
        # long stopwaitsecs covers a micro-batch in flight plus Spark's shutdown before
        # supervisord resorts to SIGKILL on the whole group. The bars query runs in a JVM of
        # its own, niced below the hot path (TICKCAST_BARS_NICENESS): its batches (bars,
        # features, the audit) never take the CPU a tick needs on its way into Delta.
        *(Program(name, [tickcast, "stream", "ingest", "--query", query], priority=priority,
                  startsecs=10, stopwaitsecs=90, stopasgroup=False)
          for name, query, priority in (("ingest", "ticks", 20), ("bars", "bars", 22))),
        Program("scorer", [tickcast, "stream", "score"], priority=25, startsecs=5, stopwaitsecs=30),
        Program("api", [tickcast, "serve", "api"], priority=30),
        Program("dashboard", [tickcast, "serve", "dashboard"], priority=40),
        # Dry run until Twilio / SendGrid credentials are set: messages rendered, logged, recorded.
        Program("alerts", [tickcast, "alerts", "run"], priority=42, startsecs=5, stopwaitsecs=60),
        # Each streaming query's progress as Prometheus metrics, for Prometheus (ours or the operator's).
        Program("metrics", [tickcast, "metrics", "serve"], priority=43, startsecs=3, stopwaitsecs=10),
    ]
    if prometheus.is_local(settings):
        # Keeps the metrics over time (the dashboard's Pipeline page); loopback only, bounded retention.
        result.append(Program("prometheus", prometheus.server_command(settings), priority=44, startsecs=3,
                              stopwaitsecs=30))
    if settings.airflow_enabled:
        # The batch side; its `maintenance` DAG runs the table maintenance.
        result += [Program(airflow.program_name(component), [tickcast, "airflow", "run", component],
                           priority=46 + i, startsecs=10, stopwaitsecs=60)
                   for i, component in enumerate(airflow.COMPONENTS)]
    else:
        # Without Airflow: compaction, VACUUM and retention every maintain_interval_seconds.
        result.append(Program("maintain", [tickcast, "maintain", "--every", f"{settings.maintain_interval_seconds:g}"],
                              priority=45, stopwaitsecs=60))
    if settings.demo_feed_enabled:
        result.append(
            Program(
                "feed",
                [
                    tickcast, "produce", "synthetic",
                    "--symbols", str(settings.demo_feed_symbols),
                    "--rate", f"{settings.demo_feed_rate:g}",
                    "--seed", str(settings.demo_feed_seed),
                    "--seconds", "0",
                ],
                priority=50,
                stopwaitsecs=15,
            )
        )
    return result


def _env_value(value: Any) -> str | None:
    from pydantic import SecretStr

    if value is None:
        return None
    if isinstance(value, SecretStr):
        # The program needs the secret itself, not its mask (the config file is the owner's only).
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    if isinstance(value, (list, tuple, dict, set)):
        return json.dumps(list(value) if isinstance(value, set) else value)
    return str(value)


def program_environment(settings: Settings) -> dict[str, str]:
    """TICKCAST_* for every setting, so each program sees exactly this configuration
    whatever directory or shell supervisord was started from."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = _env_value(getattr(settings, name))
        if value is not None:
            env[f"TICKCAST_{name.upper()}"] = value
    env["TICKCAST_HOME"] = str(settings.home_dir)
    # Nothing taken from the caller's environment here (PATH and the like reach the
    # programs through supervisord's own environment): the config must come out
    # identical on every `up`, or `update` would restart programs for no reason.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _escape(value: str) -> str:
    # supervisord expands %(name)s in most values.
    return value.replace("%", "%%")


def _quote_env(key: str, value: str) -> str:
    # supervisor splits `environment` with a non-POSIX shlex: quotes group, no escapes.
    for quote in ('"', "'"):
        if quote not in value:
            return f"{key}={quote}{_escape(value)}{quote}"
    raise PlatformError(f"{key} contains both kinds of quote; supervisord cannot pass it on")


def render_config(
    settings: Settings,
    program_list: list[Program] | None = None,
    bin_dir: Path | None = None,
) -> str:
    paths = Paths.for_settings(settings)
    program_list = programs(settings, bin_dir) if program_list is None else program_list
    env = program_environment(settings)
    home = _escape(str(settings.home_dir))
    lines = [
        "; Written by `tickcast up`; regenerated on every run, edits are lost.",
        "[unix_http_server]",
        f"file={_escape(str(paths.socket))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_escape(str(paths.logfile))}",
        "logfile_maxbytes=10MB",
        "logfile_backups=3",
        f"pidfile={_escape(str(paths.pidfile))}",
        f"directory={home}",
        f"childlogdir={_escape(str(settings.log_dir))}",
        "identifier=tickcast",
        # Every program writes under the home as its owner only (tickcast.platform.permissions).
        f"umask={PRIVATE_UMASK:03o}",
        "loglevel=info",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_escape(str(paths.socket))}",
        "",
    ]
    for program in program_list:
        log = _escape(str(program_log(settings, program.name)))
        environment = ",".join(
            _quote_env(k, v) for k, v in {**env, **program.environment}.items()
        )
        lines += [
            f"[program:{program.name}]",
            f"command={_escape(shlex.join(program.command))}",
            f"directory={home}",
            f"priority={program.priority}",
            "autostart=false",
            f"autorestart={'true' if program.autorestart else 'false'}",
            f"startsecs={program.startsecs}",
            f"startretries={program.startretries}",
            f"exitcodes={','.join(map(str, program.exitcodes))}",
            f"stopsignal={program.stopsignal}",
            f"stopwaitsecs={program.stopwaitsecs}",
            f"stopasgroup={'true' if program.stopasgroup else 'false'}",
            f"killasgroup={'true' if program.killasgroup else 'false'}",
            "redirect_stderr=true",
            f"stdout_logfile={log}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=3",
            f"environment={environment}",
            "",
        ]
    return "\n".join(lines)


def write_config(settings: Settings, program_list: list[Program] | None = None) -> Path:
    """Write the config atomically, readable by the owner only (it may carry SASL secrets)."""
    paths = Paths.for_settings(settings)
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.config.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(render_config(settings, program_list))
    os.replace(tmp, paths.config)
    return paths.config


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class Supervisor:
    """A thin client for one TickCast supervisord (one per $TICKCAST_HOME)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = Paths.for_settings(settings)

    def _proxy(self) -> Any:
        # A fresh transport per call: a request that failed half-way leaves
        # SupervisorTransport's persistent connection unusable.
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.paths.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self._proxy(), method)(*args)

    def is_running(self) -> bool:
        try:
            return self.call("getState")["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def pid(self) -> int | None:
        try:
            return int(self.call("getPID"))
        except (OSError, xmlrpc.client.Error):
            return None

    def start_daemon(self, timeout: float = 30.0) -> None:
        """Start supervisord with the written config; return once it answers."""
        supervisord = venv_bin() / "supervisord"
        if not supervisord.exists():
            raise PlatformError(f"{supervisord} not found; run `make up` (it runs uv sync)")
        # supervisord opens its socket before it daemonizes, so socket and config
        # errors surface here rather than in its log.
        proc = subprocess.run(
            [str(supervisord), "-c", str(self.paths.config)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip().splitlines()
            raise PlatformError(
                f"supervisord failed to start: {message[-1] if message else proc.returncode}",
                tail(self.paths.logfile),
            )
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"supervisord did not answer on {self.paths.socket} within {timeout:.0f}s",
                    tail(self.paths.logfile),
                )
            time.sleep(0.1)

    def update(self) -> dict[str, list[str]]:
        """Apply a rewritten config to a running supervisord, like `supervisorctl update`."""
        added, changed, removed = self.call("reloadConfig")[0]
        for name in removed + changed:
            try:
                self.call("stopProcessGroup", name, True)
            except xmlrpc.client.Fault:
                pass
            self.call("removeProcessGroup", name)
        for name in added + changed:
            self.call("addProcessGroup", name)
        return {"added": added, "changed": changed, "removed": removed}

    def processes(self) -> dict[str, dict[str, Any]]:
        return {info["name"]: info for info in self.call("getAllProcessInfo")}

    def priorities(self) -> dict[str, int]:
        return {info["name"]: info["process_prio"] for info in self.call("getAllConfigInfo")}

    def start(self, name: str) -> None:
        from supervisor.xmlrpc import Faults

        try:
            self.call("startProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.ALREADY_STARTED:
                raise PlatformError(f"supervisord cannot start {name}: {fault.faultString}") from fault

    def stop(self, name: str) -> None:
        from supervisor.xmlrpc import Faults

        try:
            self.call("stopProcess", name, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.NOT_RUNNING:
                raise PlatformError(f"supervisord cannot stop {name}: {fault.faultString}") from fault

    def stop_all(self, names: list[str], timeout: float) -> list[str]:
        """Stop ``names`` at once (each by its own stop signal, SIGKILLed by supervisord after its
        stopwaitsecs); return once none is alive, or the names still alive after ``timeout``."""
        from supervisor.xmlrpc import Faults

        for name in names:
            try:
                self.call("stopProcess", name, False)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode != Faults.NOT_RUNNING:
                    raise PlatformError(f"supervisord cannot stop {name}: {fault.faultString}") from fault
        deadline = time.monotonic() + timeout
        while True:
            infos = self.processes()
            alive = [name for name in names if infos[name]["statename"] in ("STARTING", "RUNNING", "BACKOFF",
                                                                            "STOPPING")]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Ask supervisord to exit and wait until its process is gone."""
        pid = self.pid()
        try:
            self.call("shutdown")
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + timeout
        while pid is not None and _alive(pid):
            if time.monotonic() > deadline:
                raise PlatformError(f"supervisord (pid {pid}) still running {timeout:.0f}s after shutdown")
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemon reparented to an init that does not reap leaves a zombie behind.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
