"""Redis under the platform: its password, its configuration file and its command, a readiness
check, what ``tickcast status`` shows of it, and ``RedisProcess`` for tests.

The binary is Debian's ``redis-server`` package; with ``redis_embedded`` the platform runs it as
program ``redis`` under supervisord, in the foreground, on loopback only. One server holds every
consumer's data in its own database: 0 the Feast online store, 1 the API's rate-limit counters,
2 the latest predictions (``Settings.embedded_redis_url``).

Choices of the configuration (``render_config``):

- the password (``requirepass``) is generated at setup into ``redis_password_path`` (0600, in a
  0700 directory) and reaches the server through the configuration file (0600, in the 0700
  ``$TICKCAST_HOME/redis``), never through a command line that ``ps`` shows;
- ``maxmemory`` with ``noeviction``: at the bound writes fail (each client reports its store
  unavailable and keeps what it could not write) and nothing is dropped. Any evicting policy
  would drop live data silently: a dropped rate-limit counter lets a key start its window
  again, a dropped prediction or feature row is served as missing. The ``volatile-*`` policies
  are no exception, since the counters are exactly the keys with an expiry;
- persistence by RDB snapshots, no append-only file: the counters live for a window of seconds
  to a minute and may be lost; the predictions and the features are rewritten by the scorer and
  the stream anyway, and a snapshot lets a restarted Redis serve them at once instead of empty
  until every symbol has ticked again. An append-only file would log every counter increment
  (one per API request) to disk for nothing. A failed snapshot (full disk) does not stop writes
  (``stop-writes-on-bgsave-error no``): serving goes on, the log says why.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.core.settings import Settings

if TYPE_CHECKING:
    import redis

# Where Debian's package puts it; a fixed path, not a PATH lookup, so that supervisord's config
# comes out the same whoever runs `up`.
REDIS_BINARY = Path("/usr/bin/redis-server")
LOOPBACK = "127.0.0.1"
# Snapshot after 5 minutes if anything changed, after 1 minute if 10,000 keys did.
SNAPSHOTS = ((300, 1), (60, 10_000))


def data_dir(settings: Settings) -> Path:
    return settings.home_dir / "redis"


def config_path(settings: Settings) -> Path:
    # Beside the data, in a directory only the owner enters: the file holds the password.
    return data_dir(settings) / "redis.conf"


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically as 0600 in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def ensure_password(path: Path) -> str:
    """The password in ``path``, generated (mode 0600) when there is none; an existing one is
    kept, since running clients and the snapshot's users know it."""
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        password = ""
    if password:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return password
    # URL-safe: it goes into redis:// URLs and Feast's connection string unquoted.
    password = secrets.token_urlsafe(32)
    _write_private(path, password + "\n")
    return password


def render_config(port: int, directory: Path, password: str | None, maxmemory_mb: int,
                  snapshots: bool = True) -> str:
    """redis.conf for a server on loopback at ``port`` (see the module's docstring for why)."""
    lines = [
        "# Written by tickcast from the settings; regenerated on every `up`, edits are lost.",
        f"bind {LOOPBACK}",
        "protected-mode yes",
        f"port {port}",
        # In the foreground, logging to stdout: supervisord owns the process and its log.
        "daemonize no",
        'logfile ""',
        f"dir {directory}",
        "dbfilename dump.rdb",
        "appendonly no",
        *([f"save {seconds} {changes}" for seconds, changes in SNAPSHOTS] if snapshots else ['save ""']),
        "stop-writes-on-bgsave-error no",
        f"maxmemory {maxmemory_mb}mb",
        "maxmemory-policy noeviction",
        # Idle clients are the API's and the scorer's pools: kept, but dead peers noticed.
        "timeout 0",
        "tcp-keepalive 60",
    ]
    if password:
        lines.append(f"requirepass {password}")
    return "\n".join(lines) + "\n"


def write_config(settings: Settings) -> Path:
    """The embedded server's redis.conf (0600), from the settings and the password file."""
    path = config_path(settings)
    password = ensure_password(settings.redis_password_path)
    _write_private(path, render_config(settings.redis_port, data_dir(settings), password,
                                       settings.redis_maxmemory_mb))
    return path


def server_command(settings: Settings) -> list[str]:
    """The program supervisord runs: everything, the password included, is in the file."""
    return [str(REDIS_BINARY), str(config_path(settings))]


def missing_binary_message() -> str | None:
    """Why the platform's Redis cannot start, or None when it can."""
    if REDIS_BINARY.exists():
        return None
    return (f"{REDIS_BINARY} not found: run `make bootstrap` (it installs Debian's redis-server package), "
            "or turn TICKCAST_REDIS_EMBEDDED off and give each consumer a Redis of your own")


def client(port: int, password: str | None, db: int = 0, timeout: float = 2.0) -> redis.Redis:
    """A client of the server on loopback at ``port``; every connect and reply bounded."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=LOOPBACK, port=port, db=db, password=password, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _embedded_client(settings: Settings, timeout: float) -> redis.Redis:
    return client(settings.redis_port, settings.embedded_redis_password, timeout=timeout)


def ping(settings: Settings, timeout: float = 1.0) -> str | None:
    """None when the embedded Redis answers PING with its password, else why not."""
    from redis.exceptions import RedisError

    try:
        with _embedded_client(settings, timeout) as conn:
            conn.ping()
    except (RedisError, OSError) as exc:
        return f"PING on port {settings.redis_port} failed ({exc.__class__.__name__}: {exc})"
    return None


@dataclass
class RedisStatus:
    """What `tickcast status` shows of the embedded Redis."""

    version: str | None = None
    used_memory: int | None = None  # bytes
    maxmemory: int | None = None  # bytes
    keys: dict[int, int] = field(default_factory=dict)  # database -> keys
    error: str | None = None


def status(settings: Settings, timeout: float = 2.0) -> RedisStatus:
    """Version, memory and keys per database of the embedded Redis (``error`` when it does not answer)."""
    from redis.exceptions import RedisError

    try:
        with _embedded_client(settings, timeout) as conn:
            info: dict[str, Any] = conn.info()
    except (RedisError, OSError) as exc:
        return RedisStatus(error=f"{exc.__class__.__name__}: {exc}")
    keys = {int(name.removeprefix("db")): int(value["keys"])
            for name, value in info.items() if name.startswith("db") and isinstance(value, dict)}
    return RedisStatus(version=str(info.get("redis_version")), used_memory=int(info.get("used_memory", 0)),
                       maxmemory=int(info.get("maxmemory", 0)) or None, keys=dict(sorted(keys.items())))


class RedisProcess:
    """Debian's redis-server on a free loopback port under ``workdir``, for tests and benchmarks:
    started, paused (SIGSTOP: it accepts connections and never answers), killed, started again
    on the same port (empty: no snapshots). The configuration is ``render_config``'s."""

    def __init__(self, workdir: Path, password: str | None = None, maxmemory_mb: int = 64):
        from tickcast.platform.processes import free_port

        if not REDIS_BINARY.exists():
            raise RuntimeError(missing_binary_message())
        self.workdir = Path(workdir)
        self.port = free_port()
        self.password = password
        self.maxmemory_mb = maxmemory_mb
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> RedisProcess:
        from tickcast.platform.processes import wait_for_port

        conf = self.workdir / "redis.conf"
        _write_private(conf, render_config(self.port, self.workdir, self.password, self.maxmemory_mb,
                                           snapshots=False))
        with (self.workdir / "redis.log").open("a") as log:
            self.proc = subprocess.Popen([str(REDIS_BINARY), str(conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=timeout, proc=self.proc)
        return self

    def client(self, db: int = 0, timeout: float = 5.0) -> redis.Redis:
        return client(self.port, self.password, db, timeout)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL ends a stopped process too
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        from tickcast.platform.processes import stop_process

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server would not see the TERM
            stop_process(self.proc)
