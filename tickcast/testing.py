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
