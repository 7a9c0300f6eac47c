"""A benchmark's own platform: a scratch TICKCAST_HOME with its JVM jars and Kafka broker, the
``tickcast`` processes the benchmark starts on it, and the cleanup that stops them all (also on
an error or a SIGTERM) and removes the scratch directory unless asked to keep it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ScratchPlatform:
    """The running scratch platform: its settings (bound to its broker), the environment its
    processes get, and those processes by name."""

    def __init__(self, directory: Path, settings: Any, env: dict[str, str]):
        self.dir = directory
        self.settings = settings
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers

    def start(self, name: str, *command: str, program: list[str] | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``tickcast *command`` (or ``program + command``) as ``name``, its output in
        ``<scratch>/<name>.log``. One session for all: with the kernel's autogroups, the
        niceness the queries give themselves only orders processes within a session (as under
        the platform's supervisor)."""
        from tickcast.platform.processes import TICKCAST

        with self.log(name).open("w") as out:
            proc = subprocess.Popen([*(program or [TICKCAST]), *command], env=env or self.env,
                                    stdout=out, stderr=subprocess.STDOUT, process_group=0)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def stop(self, *names: str, timeout: float = 120) -> None:
        """Stop these processes, in this order (SIGTERM, then SIGKILL after ``timeout``)."""
        from tickcast.platform.processes import stop_process

        for name in names:
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                stop_process(proc, timeout=timeout)

    def stop_all(self) -> None:
        self.stop(*reversed(list(self.procs)))

    def exited(self) -> list[str]:
        """The processes started and not stopped here that are no longer running."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]


@contextmanager
def scratch_platform(kind: str, *, keep: bool = False, env: dict[str, str] | None = None,
                     **settings_fields: Any) -> Iterator[ScratchPlatform]:
    """A scratch home and broker for the benchmark ``kind``; ``settings_fields`` override the
    defaults of its Settings, ``env`` adds to its processes' environment (which has no
    ``TICKCAST_`` variable of the caller's)."""
    from tickcast.core.settings import Settings
    from tickcast.platform.broker import running_broker
    from tickcast.platform.jars import ensure_jars, extensions_jar

    # A SIGTERM ends the run through the cleanup below, which stops every process it started.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    directory = Path(tempfile.mkdtemp(prefix=f"tickcast-bench-{kind}-"))
    print(f"{kind}: scratch home {directory}", flush=True)
    try:
        settings = Settings(home=directory / "home", **settings_fields)
        ensure_jars(settings)
        extensions_jar(settings)
        with running_broker(settings, directory / "kafka") as bootstrap:
            process_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
            process_env.update(TICKCAST_HOME=str(settings.home_dir), TICKCAST_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                               **(env or {}))
            platform = ScratchPlatform(
                directory, settings.model_copy(update={"kafka_bootstrap_servers": bootstrap}), process_env)
            try:
                yield platform
            finally:
                platform.stop_all()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if keep:
            print(f"scratch home and logs kept in {directory}", flush=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
