"""The embedded PostgreSQL (Debian's postgresql 15): one server, a database per user of it.

``setup`` makes the cluster once (``initdb``): one superuser role, ``settings.POSTGRES_USER``,
trusted on the unix socket and refused over TCP, which the server does not listen on anyway
(``listen_addresses=''``). The socket sits in ``settings.postgres_socket_dir``, a 0700 directory,
so only the owner of the home can reach it and no password exists to leak. supervisord runs
``server_command`` in the foreground, its log on stderr; ``up`` then makes the databases
(``settings.POSTGRES_DATABASES``) that are missing.

PostgreSQL refuses to run as root. Run by root (a container), the server runs in a user
namespace where root is mapped to an unprivileged id: the files stay root's on disk, owned by the
server's own user inside, and nothing is chowned.

``PostgresProcess`` runs the same server as a child of the caller on a free port (tests).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.platform.processes import free_port, stop_process

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

BIN_DIR = Path("/usr/lib/postgresql/15/bin")

# Sized for a 2-core box that PostgreSQL shares with Kafka, Spark and the services: its
# clients (MLflow, the alert engine, Airflow, the API's key lookups) keep small working sets.
# No parallel query: the two cores are the streaming jobs'.
SERVER_SETTINGS: dict[str, str] = {
    "shared_buffers": "128MB",
    "effective_cache_size": "512MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    "max_connections": "100",
    "max_worker_processes": "4",
    "max_parallel_workers_per_gather": "0",
    "max_wal_size": "512MB",
    "huge_pages": "off",
    # supervisord keeps the log (program log postgres.log).
    "logging_collector": "off",
    "log_destination": "stderr",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

# Every connection of ours gives up on a server that does not answer within this bound.
CONNECT_TIMEOUT_SECONDS = 5


class PostgresError(RuntimeError):
    """The embedded PostgreSQL cannot be set up or reached; the message says why."""


def missing_binary_message() -> str | None:
    """Why the server cannot be started here, or None."""
    if not (BIN_DIR / "postgres").exists():
        return f"{BIN_DIR / 'postgres'} is missing: install Debian's postgresql-15 (infra/bootstrap installs it)"
    return None


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        raise PostgresError(missing_binary_message() or f"{path} is missing")
    return path


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` as PostgreSQL accepts to run: as is, or by root in a user namespace in which
    root is an unprivileged user (the ``postgres`` account's id when there is one)."""
    if os.geteuid() != 0:
        return command
    try:
        account = pwd.getpwnam("postgres")
        uid, gid = account.pw_uid, account.pw_gid
    except KeyError:
        uid = gid = 1
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}", *command]


@dataclass(frozen=True)
class Layout:
    """Where one server keeps its data and its socket, and its port."""

    data_dir: Path
    socket_dir: Path
    port: int
    user: str

    @classmethod
    def for_settings(cls, settings: Settings) -> Layout:
        return cls(settings.postgres_data_dir, settings.postgres_socket_dir, settings.postgres_port,
                   settings.POSTGRES_USER)

    def conninfo(self, database: str = "postgres") -> dict[str, Any]:
        """psycopg's keyword arguments for ``database`` on this server."""
        return {"host": str(self.socket_dir), "port": self.port, "user": self.user, "dbname": database,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS}


def initdb(layout: Layout, sync: bool = True) -> bool:
    """Make the cluster in ``layout.data_dir`` unless it is there; True when made now. Without
    ``sync``, its files are not flushed to disk (a throwaway server)."""
    if (layout.data_dir / "PG_VERSION").exists():
        return False
    layout.data_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A half-made cluster (initdb killed) would make initdb refuse the non-empty directory.
    if layout.data_dir.exists():
        shutil.rmtree(layout.data_dir)
    command = [str(binary("initdb")), "--pgdata", str(layout.data_dir), "--username", layout.user,
               "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C.UTF-8",
               "--no-instructions", *(() if sync else ("--no-sync",))]
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise PostgresError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return True


def prepare(layout: Layout, sync: bool = True) -> None:
    """The cluster and the socket directory (0700: the socket's only access control)."""
    initdb(layout, sync)
    layout.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    layout.socket_dir.chmod(0o700)


# For throwaway servers (tests): no fsync, which costs seconds per created database on a slow disk
# and guards only against the machine crashing. A killed server loses nothing by it: what it
# wrote is in the kernel's page cache, and commits still wait for their WAL to be written.
THROWAWAY_SETTINGS: dict[str, str] = {"fsync": "off"}


def server_command(layout: Layout, overrides: dict[str, str] | None = None) -> list[str]:
    """The server in the foreground (for supervisord), on the unix socket only."""
    options = {
        **SERVER_SETTINGS,
        **(overrides or {}),
        "listen_addresses": "",
        "unix_socket_directories": str(layout.socket_dir),
        "unix_socket_permissions": "0700",
        "port": str(layout.port),
    }
    command = [str(BIN_DIR / "postgres"), "-D", str(layout.data_dir)]
    for name, value in options.items():
        command += ["-c", f"{name}={value}"]
    return _as_server_user(command)


def _connect(layout: Layout, database: str = "postgres", timeout: float | None = None) -> Any:
    import psycopg

    info = layout.conninfo(database)
    if timeout is not None:
        info["connect_timeout"] = max(1, int(timeout))
    return psycopg.connect(**info, autocommit=True)


def not_ready(layout: Layout) -> str | None:
    """None when the server takes a connection and answers a query, else why not."""
    import psycopg

    try:
        with _connect(layout, timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no connection on {layout.socket_dir} port {layout.port} yet ({str(exc).strip().splitlines()[0]})"
    return None


def wait_ready(layout: Layout, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    reason = not_ready(layout)
    while reason is not None:
        if proc is not None and proc.poll() is not None:
            raise PostgresError(f"PostgreSQL exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise PostgresError(f"PostgreSQL not ready after {timeout:.0f}s: {reason}")
        time.sleep(0.2)
        reason = not_ready(layout)


def ensure_databases(layout: Layout, databases: tuple[str, ...]) -> list[str]:
    """Create each of ``databases`` that is missing; returns those created."""
    import psycopg
    from psycopg import sql

    created = []
    with _connect(layout) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in databases:
            if name in existing:
                continue
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
            except psycopg.errors.DuplicateDatabase:
                pass  # another `up` made it meanwhile
    return created


@dataclass
class PostgresStatus:
    """What `tickcast status` shows of the embedded PostgreSQL."""

    version: str | None = None
    databases: dict[str, int] = field(default_factory=dict)  # database -> bytes
    connections: dict[str, int] = field(default_factory=dict)  # database -> client connections
    max_connections: int | None = None
    error: str | None = None


def status(layout: Layout) -> PostgresStatus:
    """Version, databases with their sizes and client connections per database (``error`` when
    the server does not answer)."""
    import psycopg

    try:
        with _connect(layout, timeout=2) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            databases = {name: size for name, size in conn.execute(
                "SELECT datname, pg_database_size(datname) FROM pg_database "
                "WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname")}
            connections = dict(conn.execute(
                "SELECT datname, count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND datname IS NOT NULL AND pid <> pg_backend_pid() "
                "GROUP BY datname ORDER BY datname"))
            max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
    except psycopg.Error as exc:
        return PostgresStatus(error=f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0]}")
    return PostgresStatus(version=str(version).split(" ")[0], databases=databases, connections=connections,
                          max_connections=max_connections)


class PostgresProcess:
    """The server as a child of this process, which can be restarted, killed and started again on
    the same data (tests). In ``root`` on a free port, or where ``for_settings`` says (the layout
    `up` gives it: ``settings.postgres_url`` reaches it); ``THROWAWAY_SETTINGS`` unless
    ``overrides`` says otherwise. A context manager: started on entry, stopped on exit."""

    def __init__(self, root: Path, user: str = "tickcast", layout: Layout | None = None,
                 overrides: dict[str, str] | None = None):
        root.mkdir(parents=True, exist_ok=True)
        self.overrides = THROWAWAY_SETTINGS if overrides is None else overrides
        if layout is None:
            port = free_port()
            socket_dir = root / "socket"
            if len(str(socket_dir / f".s.PGSQL.{port}.lock")) > 100:  # a unix socket's path has 107 bytes
                import tempfile

                socket_dir = Path(tempfile.mkdtemp(prefix="tickcast-pg-"))
            layout = Layout(root / "data", socket_dir, port, user)
        self.layout = layout
        self.log_path = root / "postgres.log"
        self.proc: subprocess.Popen | None = None
        prepare(self.layout, sync=self.overrides.get("fsync") != "off")

    @classmethod
    def for_settings(cls, settings: Settings) -> PostgresProcess:
        """The embedded server of ``settings`` (give it a free ``postgres_port``), logging under its home."""
        return cls(settings.log_dir, layout=Layout.for_settings(settings))

    def url(self, database: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``database`` (made when missing)."""
        ensure_databases(self.layout, (database,))
        return (f"postgresql+{driver}://{self.layout.user}@/{database}"
                f"?host={self.layout.socket_dir}&port={self.layout.port}")

    def start(self, timeout: float = 60) -> PostgresProcess:
        with self.log_path.open("a") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(server_command(self.layout, self.overrides), stdout=log_file,
                                         stderr=subprocess.STDOUT)
        try:
            wait_ready(self.layout, timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, a clean checkpoint), as supervisord stops it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)

    def restart(self, timeout: float = 60) -> None:
        self.stop()
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster: its backends end on their own (they watch it), and the next
        start replays the WAL."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=60)
        # A new postmaster refuses to start while an old backend still holds the shared memory.
        deadline = time.monotonic() + 30
        pid_file = self.layout.data_dir / "postmaster.pid"
        while pid_file.exists() and time.monotonic() < deadline and _backends_alive(pid_file):
            time.sleep(0.1)

    def __enter__(self) -> PostgresProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _backends_alive(pid_file: Path) -> bool:
    """Whether any process still uses the data directory the pid file's postmaster ran on."""
    import psutil

    data_dir = str(pid_file.parent)
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] == "postgres" and process.cwd() == data_dir:
                return True
        except psutil.Error:
            continue
    return False
