"""The fault-injection harness: the platform's jobs as real subprocesses (`tickcast stream
ingest`, `tickcast stream score`, `tickcast alerts run`) on the session broker, each in its own
process group, run with ``TICKCAST_FAULT`` naming a point of ``tickcast.core.faults`` and
restarted without it."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.e2e.conftest import IngestProcess
from tickcast.core.faults import ENV_VAR
from tickcast.core.settings import Settings
from tickcast.platform.processes import TICKCAST, wait_until


def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1)
                                       for n in names]).values():
        future.result(30)


class Job(IngestProcess):
    """A `tickcast` command in its own process group, logging to one file across restarts."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...]):
        super().__init__(env, log_path)
        self.command = args

    def start(self) -> Job:
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([TICKCAST, *self.command], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log_since_start(self) -> str:
        return self.log_path.read_bytes()[self.offset:].decode(errors="replace")

    def wait_dead(self, timeout: float, what: str) -> int:
        """The return code once the process ended by itself (a fault fired)."""
        wait_until(lambda: not self.alive, timeout=timeout, what=what, interval=0.2, on_timeout=self.log_tail)
        assert self.proc is not None
        return self.proc.returncode


class FaultHome:
    """A fresh home and fresh topics on the session broker, and the jobs started on them."""

    def __init__(self, tmp_path: Path, base_settings: Settings, bootstrap: str, mlflow_uri: str,
                 partitions: int = 1):
        suffix = uuid.uuid4().hex[:8]
        self.topics = {kind: f"{kind}-{suffix}" for kind in ("ticks", "predictions", "alerts")}
        create_topics(bootstrap, *self.topics.values(), partitions=partitions)
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.settings = base_settings.model_copy(update={
            "home": tmp_path / "home", "kafka_bootstrap_servers": bootstrap, "topic_ticks": self.topics["ticks"],
            "topic_predictions": self.topics["predictions"], "topic_alerts": self.topics["alerts"]})
        env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        self.env = {
            **env, "TICKCAST_HOME": str(self.settings.home_dir), "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TICKCAST_TOPIC_TICKS": self.topics["ticks"], "TICKCAST_TOPIC_PREDICTIONS": self.topics["predictions"],
            "TICKCAST_TOPIC_ALERTS": self.topics["alerts"], "TICKCAST_SPARK_MASTER": "local[2]",
            "TICKCAST_SPARK_SHUFFLE_PARTITIONS": "2", "TICKCAST_SPARK_DRIVER_MEMORY": "1g",
            "TICKCAST_MLFLOW_TRACKING_URI": mlflow_uri,
        }
        self.jobs: list[Job] = []

    def job(self, *args: str, log_name: str, fault: str | None = None, **overrides: str) -> Job:
        env = {**self.env, **overrides, **({ENV_VAR: fault} if fault else {})}
        job = Job(env, self.tmp_path / f"{log_name}.log", args).start()
        self.jobs.append(job)
        return job

    def run_cli(self, *args: str, timeout: float = 300, **overrides: str) -> subprocess.CompletedProcess:
        result = subprocess.run([TICKCAST, *args], env={**self.env, **overrides}, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"tickcast {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def stop_all(self) -> None:
        for job in self.jobs:
            job.request_stop()
        for job in self.jobs:
            job.stop()


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One (empty) MLflow registry for every home of the session: the first job to open it
    creates its tables, which costs each fresh home seconds otherwise."""
    return f"sqlite:///{tmp_path_factory.mktemp('faults-mlflow') / 'mlflow.db'}"


@pytest.fixture
def fault_home(tmp_path: Path, base_settings: Settings, kafka_bootstrap: str, mlflow_uri: str):
    homes: list[FaultHome] = []

    def make(partitions: int = 1) -> FaultHome:
        home = FaultHome(tmp_path, base_settings, kafka_bootstrap, mlflow_uri, partitions)
        homes.append(home)
        return home

    yield make
    for home in homes:
        home.stop_all()
