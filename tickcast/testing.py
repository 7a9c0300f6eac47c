"""Helpers for tests and benchmarks: free ports and a throwaway real Kafka broker."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tickcast import broker
from tickcast.settings import Settings

# The CLI of the environment running the tests or benchmarks.
TICKCAST = str(Path(sys.executable).parent / "tickcast")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextmanager
def running_broker(settings: Settings, root: Path) -> Iterator[str]:
    """Start a real single-node KRaft broker on free ports; yield its bootstrap address."""
    layout = broker.layout_for(settings, root=root, port=free_port(), controller_port=free_port())
    broker.prepare(settings, layout)
    log_file = (root / "broker.log").open("w")
    proc = subprocess.Popen(
        broker.broker_command(settings, layout), stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(layout.port, timeout=90, proc=proc)
        yield layout.bootstrap
    finally:
        stop_process(proc)
        log_file.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 1.0,
               on_timeout: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")


def delta_rows(settings: Settings, table: str, columns: list[str] | None = None):
    """Rows of a Delta table as a pyarrow Table, read with delta-rs (no Spark)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(settings.table_path(table)).to_pyarrow_table(columns=columns)
    except TableNotFoundError:
        return None


def delta_count(settings: Settings, table: str) -> int:
    rows = delta_rows(settings, table, ["symbol"] if table != "quarantine" else ["reason"])
    return 0 if rows is None else rows.num_rows


def topic_message_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def quick_bundles(directory: Path, *, features: list[str], sequence_length: int = 4, interval: str = "1d",
                  children: tuple[str, ...] = (), seed: int = 0, lstm: dict | None = None,
                  transformer: dict | None = None) -> dict[str, Path]:
    """An untrained LSTM and Transformer bundle (random weights, identity scaler; small unless
    ``lstm``/``transformer`` give an experiment's architecture kwargs).

    Real ONNX files with the real layout, for tests and benchmarks of everything that
    serves models; their predictions mean nothing.
    """
    import numpy as np

    from tickcast.models import networks, training
    from tickcast.models.bundle import write_bundle
    from tickcast.models.dataset import Scaler
    from tickcast.models.experiment import ExperimentConfig

    config = ExperimentConfig(
        name="quick", interval=interval, symbols=list(children) or ["AAA"], start="2020-01-01",
        end="2021-01-01", features=features, training={"sequence_length": sequence_length},
        lstm=lstm or {"units": 8}, transformer=transformer or {"units": 8, "ff_units": 16, "heads": 2},
    )
    scaler = Scaler(list(features), np.zeros(len(features)), np.ones(len(features)))
    training.seed_everything(seed)
    out = {}
    for arch in ("lstm", "transformer"):
        kwargs = getattr(config, arch).model_dump()
        build = networks.BUILDERS[arch]
        parent = build(sequence_length, len(features), return_scale=0.01, **kwargs)
        kids = {symbol: build(sequence_length, len(features), return_scale=0.02, **kwargs) for symbol in children}
        probe = np.zeros((1, sequence_length, len(features)), dtype=np.float32)
        for model in (parent, *kids.values()):
            model(probe)  # Keras exports only a model that has been called once
        out[arch] = write_bundle(Path(directory) / arch, arch=arch, config=config, scaler=scaler,
                                 parent=parent, children=kids)
    return out


def register_bundles(settings: Settings, bundles: dict[str, Path], *, interval: str = "1d",
                     champion: bool = True, metrics: dict[str, float] | None = None) -> dict[str, str]:
    """Log bundles to MLflow as one run and register a version of each (challenger, and
    champion too with ``champion``). Returns registered name -> version."""
    import mlflow

    from tickcast import tracking
    from tickcast.models import registry

    tracking.configure_mlflow(settings)
    experiment = tracking.experiment(settings, "tickcast-test-bundles")
    client = registry.client()
    versions = {}
    with mlflow.start_run(experiment_id=experiment.experiment_id) as active:
        for arch, directory in bundles.items():
            mlflow.log_artifacts(str(directory), artifact_path=f"bundle_{arch}")
            name = registry.registered_name(arch, interval)
            tags = {"architecture": arch, "interval": interval, "variant": "child",
                    **{f"metric.{k}": str(v) for k, v in (metrics or {}).items()}}
            version = registry.register(client, name=name, source=f"{active.info.artifact_uri}/bundle_{arch}",
                                        run_id=active.info.run_id, tags=tags)
            if champion:
                registry.make_champion(client, name, version.version, None)
            versions[name] = str(version.version)
    return versions
