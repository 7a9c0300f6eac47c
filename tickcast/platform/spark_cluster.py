"""A Spark standalone cluster from the jars in the pyspark wheel: the master's and the workers'
commands (for supervisord, or as children of a test), what the master says about its cluster,
and ``StandaloneCluster`` for the tests.

The wheel ships spark-core (where ``Master`` and ``Worker`` live) and ``bin/spark-class`` but no
``sbin/start-master.sh``; ``spark-class`` ``exec``s the JVM in the foreground, which is what
supervisord needs (``spark-daemon.sh`` would fork it away). Everything listens on loopback:
``SPARK_LOCAL_IP`` is the address the RPC endpoints, the web UIs and the executors the workers
launch bind to. The master's REST submission server (port 6066, on by default in Spark 4) is
switched off: nothing here submits through it, and it would take a fixed port. State lives
under ``$TICKCAST_HOME/spark``: logs, each worker's work dir (one directory per application,
removed by the worker once the application has ended, ``spark.worker.cleanup.*``) and its
scratch space (shuffle files, the executors' copies of the jars), and the executors' logs
roll by size. The master's and the workers' own logs are their stdout (supervisord's program logs).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickcast.core.settings import Settings
from tickcast.platform import spark_metrics
from tickcast.platform.processes import free_port, stop_process

LOOPBACK = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
MASTER_PROGRAM = "spark-master"
WORKER_PROGRAM_PREFIX = "spark-worker-"
# Heap of the master and worker JVMs themselves (executors get spark_executor_memory).
DAEMON_MEMORY = "512m"
# A finished application's directories stay this long on a worker (for its logs), then go.
APP_DATA_TTL_SECONDS = 24 * 3600
CLEANUP_INTERVAL_SECONDS = 1800
# Each executor's stdout and stderr: at most this many files of this size.
EXECUTOR_LOG_BYTES = 10 * 1024 * 1024
EXECUTOR_LOG_FILES = 3


def spark_home() -> Path:
    """The pyspark package directory, which holds bin/ and jars/ (found without importing pyspark)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this environment")
    return Path(spec.origin).parent


def worker_program(index: int) -> str:
    """Worker ``index`` (from 1) as supervisord knows it."""
    return f"{WORKER_PROGRAM_PREFIX}{index}"


@dataclass(frozen=True)
class ClusterLayout:
    """Ports and directories of one standalone cluster; worker i (from 1) serves its web UI
    at ``worker_webui_ports[i - 1]``."""

    root: Path
    port: int
    webui_port: int
    worker_webui_ports: tuple[int, ...]
    worker_cores: int
    worker_memory: str

    @property
    def workers(self) -> int:
        return len(self.worker_webui_ports)

    @property
    def master_url(self) -> str:
        return f"spark://{LOOPBACK}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{LOOPBACK}:{self.webui_port}"

    def worker_webui_url(self, index: int) -> str:
        return f"http://{LOOPBACK}:{self.worker_webui_ports[index - 1]}"

    @property
    def log_dir(self) -> Path:
        """Where ``StandaloneCluster`` writes the daemons' output (supervisord keeps its own)."""
        return self.root / "logs"

    def work_dir(self, index: int) -> Path:
        return self.root / "work" / f"worker-{index}"

    def local_dir(self, index: int) -> Path:
        # Not inside the work dir: the worker's cleanup deletes whatever there is not a running app's.
        return self.root / "local" / f"worker-{index}"

    def directories(self) -> list[Path]:
        return [self.log_dir, *(d for i in range(1, self.workers + 1) for d in (self.work_dir(i), self.local_dir(i)))]


def layout_for(settings: Settings, root: Path | None = None, port: int | None = None,
               webui_port: int | None = None, worker_webui_ports: tuple[int, ...] | None = None) -> ClusterLayout:
    """The platform's cluster from the settings (the workers' web UIs on the ports after the
    master's); the tests pass free ports and a root of their own."""
    webui = settings.spark_master_webui_port if webui_port is None else webui_port
    return ClusterLayout(
        root=root or settings.home_dir / "spark",
        port=settings.spark_master_port if port is None else port,
        webui_port=webui,
        worker_webui_ports=worker_webui_ports or tuple(webui + i for i in range(1, settings.spark_workers + 1)),
        worker_cores=settings.spark_worker_cores,
        worker_memory=settings.spark_worker_memory,
    )


def _spark_class() -> str:
    return str(spark_home() / "bin" / "spark-class")


def master_command(layout: ClusterLayout) -> list[str]:
    return [_spark_class(), MASTER_CLASS, "--host", LOOPBACK, "--port", str(layout.port),
            "--webui-port", str(layout.webui_port)]


def worker_command(layout: ClusterLayout, index: int) -> list[str]:
    return [_spark_class(), WORKER_CLASS, "--host", LOOPBACK, "--cores", str(layout.worker_cores),
            "--memory", layout.worker_memory, "--work-dir", str(layout.work_dir(index)),
            "--webui-port", str(layout.worker_webui_ports[index - 1]), layout.master_url]


def _java_options(options: dict[str, Any]) -> str:
    return " ".join(f"-D{key}={value}" for key, value in options.items())


def environment(layout: ClusterLayout, index: int | None = None) -> dict[str, str]:
    """What ``spark-class`` needs besides its arguments: the master's (``index`` None) or
    worker ``index``'s. No secret is in here."""
    env = {
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": LOOPBACK,
        # An empty conf dir of our own: no spark-defaults.conf or spark-env.sh from elsewhere.
        "SPARK_CONF_DIR": str(layout.root / "conf"),
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
    }
    if index is None:
        env["SPARK_MASTER_OPTS"] = _java_options({"spark.master.rest.enabled": "false",
                                                  **spark_metrics.DAEMON_OPTIONS})
    else:
        env["SPARK_LOCAL_DIRS"] = str(layout.local_dir(index))
        env["SPARK_WORKER_OPTS"] = _java_options({
            **spark_metrics.DAEMON_OPTIONS,
            "spark.worker.cleanup.enabled": "true",
            "spark.worker.cleanup.interval": CLEANUP_INTERVAL_SECONDS,
            "spark.worker.cleanup.appDataTtl": APP_DATA_TTL_SECONDS,
            "spark.executor.logs.rolling.strategy": "size",
            "spark.executor.logs.rolling.maxSize": EXECUTOR_LOG_BYTES,
            "spark.executor.logs.rolling.maxRetainedFiles": EXECUTOR_LOG_FILES,
        })
    return env


def prepare(layout: ClusterLayout) -> None:
    for path in (layout.root / "conf", *layout.directories()):
        path.mkdir(parents=True, exist_ok=True)


# -- what the master says -------------------------------------------------------------------------


@dataclass
class WorkerStatus:
    id: str
    state: str
    webui: str
    cores: int
    cores_used: int
    memory_mb: int
    memory_used_mb: int


@dataclass
class SparkClusterStatus:
    url: str
    status: str
    cores: int
    cores_used: int
    workers: list[WorkerStatus] = field(default_factory=list)
    active_apps: list[str] = field(default_factory=list)


def master_json(webui_url: str, timeout: float = 3.0) -> dict[str, Any]:
    """The master's ``/json/`` document (raises ``httpx.HTTPError`` when it does not answer)."""
    import httpx

    response = httpx.get(f"{webui_url}/json/", timeout=timeout)
    response.raise_for_status()
    return response.json()


def cluster_status(document: dict[str, Any]) -> SparkClusterStatus:
    return SparkClusterStatus(
        url=str(document.get("url", "")),
        status=str(document.get("status", "UNKNOWN")),
        cores=int(document.get("cores", 0)),
        cores_used=int(document.get("coresused", 0)),
        workers=[WorkerStatus(id=str(w.get("id", "")), state=str(w.get("state", "UNKNOWN")),
                              webui=str(w.get("webuiaddress", "")), cores=int(w.get("cores", 0)),
                              cores_used=int(w.get("coresused", 0)), memory_mb=int(w.get("memory", 0)),
                              memory_used_mb=int(w.get("memoryused", 0)))
                 for w in document.get("workers") or []],
        active_apps=[str(a.get("name", a.get("id", ""))) for a in document.get("activeapps") or []],
    )


def alive_worker(status: SparkClusterStatus, webui_url: str) -> WorkerStatus | None:
    """The ALIVE worker serving its web UI at ``webui_url`` (a dead one may linger in the list)."""
    for worker in status.workers:
        if worker.webui == webui_url and worker.state == "ALIVE":
            return worker
    return None


def worker_executors(webui_url: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    """The executors the worker serving its web UI at ``webui_url`` runs now (its own ``/json/``;
    each names its application in ``appdesc.name``)."""
    import httpx

    response = httpx.get(f"{webui_url}/json/", timeout=timeout)
    response.raise_for_status()
    return list(response.json().get("executors") or [])


def probe(layout: ClusterLayout, name: str) -> str | None:
    """None when program ``name`` is healthy by the master's account, else what it waits for."""
    import httpx

    try:
        status = cluster_status(master_json(layout.webui_url))
    except (httpx.HTTPError, ValueError):
        return f"GET {layout.webui_url}/json/ not answering yet"
    if status.status != "ALIVE":
        return f"master {status.status.lower()}"
    if name == MASTER_PROGRAM:
        return None
    index = int(name.removeprefix(WORKER_PROGRAM_PREFIX))
    url = layout.worker_webui_url(index)
    return None if alive_worker(status, url) else f"worker {url} not registered with the master yet"


# -- a cluster as children of this process (the tests) ------------------------------------------------


class StandaloneCluster:
    """A master and ``workers`` workers on free loopback ports under ``root`` (the batch parity test,
    the benchmarks), each in a process group of its own, so that stopping a worker stops the
    executors it launched too. A context manager: started on entry, stopped on exit."""

    def __init__(self, root: Path, workers: int = 2, cores: int = 1, memory: str = "1g"):
        self.layout = ClusterLayout(root=root, port=free_port(), webui_port=free_port(),
                                    worker_webui_ports=tuple(free_port() for _ in range(workers)),
                                    worker_cores=cores, worker_memory=memory)
        self.master: subprocess.Popen | None = None
        self.workers: dict[int, subprocess.Popen] = {}
        prepare(self.layout)

    @property
    def url(self) -> str:
        return self.layout.master_url

    def _spawn(self, command: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
        with (self.layout.log_dir / log_name).open("a") as log:  # the child keeps its own descriptor
            return subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start(self, timeout: float = 120.0) -> StandaloneCluster:
        from tickcast.platform.processes import wait_until

        self.master = self._spawn(master_command(self.layout), environment(self.layout), "master.out")
        for index in range(1, self.layout.workers + 1):
            self.workers[index] = self._spawn(worker_command(self.layout, index), environment(self.layout, index),
                                              f"worker-{index}.out")
        try:
            wait_until(lambda: all(self.probe(worker_program(i)) is None for i in range(1, self.layout.workers + 1)),
                       timeout=timeout, interval=0.5, what=f"a Spark master and {self.layout.workers} workers",
                       on_timeout=self.log_tail)
        except BaseException:
            self.stop()
            raise
        return self

    def probe(self, name: str) -> str | None:
        return probe(self.layout, name)

    def status(self) -> SparkClusterStatus:
        return cluster_status(master_json(self.layout.webui_url))

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"== {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                         for path in sorted(self.layout.log_dir.glob("*.out")))

    def stop(self) -> None:
        for proc in [*self.workers.values(), *([self.master] if self.master else [])]:
            if proc.poll() is None:
                try:
                    # The group: a worker's executors go with it.
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                stop_process(proc)
            try:
                # Whatever of the group outlived its leader (an executor's Python workers).
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
