"""Fixtures for end-to-end tests: the real ingest job as a subprocess on the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tickcast.core.settings import Settings
from tickcast.platform.processes import TICKCAST


class IngestProcess:
    """`tickcast stream ingest` (or another `tickcast stream` job, with ``args``, e.g.
    ``("--query", "bars")``) in its own process group, so a SIGKILL takes the JVM too."""

    def __init__(self, env: dict[str, str], log_path: Path, job: str = "ingest", args: tuple[str, ...] = ()):
        self.env = env
        self.log_path = log_path
        self.job = job
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> IngestProcess:
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [TICKCAST, "stream", self.job, *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def request_stop(self) -> None:
        """SIGTERM to the job itself, not its group: the JVM would stop its SparkContext on
        SIGTERM under the batch in flight (supervisord stops it the same way)."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.request_stop()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line[:300] for line in text[-lines:])


@pytest.fixture
def e2e(tmp_path: Path, base_settings: Settings, kafka_bootstrap: str):
    """A fresh home and a fresh `ticks` topic on the session broker, and env for subprocesses."""
    suffix = uuid.uuid4().hex[:8]
    topic, predictions_topic = f"ticks-{suffix}", f"predictions-{suffix}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)
                                   for name in (topic, predictions_topic)])
    for future in created.values():
        future.result(30)
    settings = base_settings.model_copy(
        update={"home": tmp_path / "home", "kafka_bootstrap_servers": kafka_bootstrap, "topic_ticks": topic,
                "topic_predictions": predictions_topic}
    )
    env = {
        **os.environ,
        "TICKCAST_HOME": str(settings.home_dir),
        "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TICKCAST_TOPIC_TICKS": topic,
        "TICKCAST_TOPIC_PREDICTIONS": predictions_topic,
        "TICKCAST_SPARK_MASTER": "local[2]",
        "TICKCAST_SPARK_SHUFFLE_PARTITIONS": "2",
        "TICKCAST_SPARK_DRIVER_MEMORY": "1g",
    }
    processes: list[IngestProcess] = []

    class Env:
        def __init__(self):
            self.settings = settings
            self.env = env
            self.topic = topic
            self.bootstrap = kafka_bootstrap

        def ingest(self, *args: str, log_name: str = "ingest", **overrides: str) -> IngestProcess:
            """`tickcast stream ingest *args` (both queries without args; ``"--query", "ticks"`` for
            one), with ``overrides`` added to its environment only, logging to ``<log_name>.log``."""
            proc = IngestProcess({**env, **overrides}, tmp_path / f"{log_name}.log", args=args).start()
            processes.append(proc)
            return proc

        def scorer(self, **overrides: str) -> IngestProcess:
            """The live scorer (`tickcast stream score`)."""
            env.update(overrides)
            proc = IngestProcess(env, tmp_path / "scorer.log", job="score").start()
            processes.append(proc)
            return proc

        def run_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
            result = subprocess.run([TICKCAST, *args], env=env, capture_output=True, text=True, timeout=timeout)
            assert result.returncode == 0, f"tickcast {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            return result

    yield Env()
    # All asked first, so they wind down side by side.
    for proc in processes:
        proc.request_stop()
    for proc in processes:
        proc.stop()
