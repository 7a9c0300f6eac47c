"""The platform's Redis: its generated configuration (loopback, password from a private file,
never on a command line, a memory bound that evicts nothing), run as supervisord would run it,
its readiness check and what `tickcast status` shows of it."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tickcast.core.settings import Settings
from tickcast.platform import redis_server
from tickcast.platform.processes import free_port, stop_process, wait_for_port
from tickcast.platform.supervisor import PROGRAM_ORDER, programs, render_config


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def embedded(settings: Settings) -> Settings:
    return settings.model_copy(update={"redis_embedded": True, "redis_port": free_port()})


def test_the_config_is_private_and_evicts_nothing(embedded: Settings) -> None:
    path = redis_server.write_config(embedded)
    password = embedded.redis_password_path.read_text().strip()
    assert len(password) >= 32
    assert _mode(embedded.redis_password_path) == 0o600 and _mode(embedded.redis_password_path.parent) == 0o700
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    lines = path.read_text().splitlines()
    for wanted in ("bind 127.0.0.1", "protected-mode yes", f"port {embedded.redis_port}", "daemonize no",
                   f"dir {redis_server.data_dir(embedded)}", "appendonly no", "maxmemory 256mb",
                   "maxmemory-policy noeviction", f"requirepass {password}"):
        assert wanted in lines
    # Generated once: a second `up` keeps the password clients and snapshots know.
    redis_server.write_config(embedded)
    assert embedded.redis_password_path.read_text().strip() == password
    # supervisord runs it early, from the file: the password is in no command line or environment.
    program = next(p for p in programs(embedded) if p.name == "redis")
    assert program.command == ["/usr/bin/redis-server", str(path)]
    names = [p.name for p in programs(embedded)]
    assert "redis" in PROGRAM_ORDER and names.index("redis") < min(
        i for i, name in enumerate(names) if name.startswith("kafka"))
    assert password not in render_config(embedded)
    assert "redis" not in [p.name for p in programs(embedded.model_copy(update={"redis_embedded": False}))]


def test_the_server_runs_from_its_config_and_answers_only_with_the_password(embedded: Settings) -> None:
    import redis

    redis_server.write_config(embedded)
    assert redis_server.ping(embedded, timeout=0.5) is not None  # not started yet: the reason
    log = (embedded.home_dir / "redis.log").open("w")
    proc = subprocess.Popen(redis_server.server_command(embedded), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(embedded.redis_port, timeout=30, proc=proc)
        assert redis_server.ping(embedded) is None
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=embedded.redis_port, socket_timeout=2).ping()
        with redis_server.client(embedded.redis_port, embedded.redis_password_path.read_text().strip(), db=2) as c:
            c.set("a", "1")
            c.set("b", "2")
            assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        # What `tickcast status` shows.
        status = redis_server.status(embedded)
        assert status.error is None
        assert status.version and status.version.startswith("7.")
        assert status.keys == {2: 2}
        assert status.maxmemory == 256 * 2**20 and 0 < (status.used_memory or 0) < status.maxmemory
    finally:
        stop_process(proc)
        log.close()
    down = redis_server.status(embedded, timeout=0.5)
    assert down.error is not None and down.version is None
