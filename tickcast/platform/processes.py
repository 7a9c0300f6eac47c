"""Processes and ports: find a free port, wait for one to open, stop a child, poll a condition.

Used by the platform's own process management, by tests and by benchmarks.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Re-exported: the platform's code and the tests reach servers through it.
from tickcast.core.settings import client_host  # noqa: F401

# The CLI of the environment running this Python (tests and benchmarks start it as a child).
TICKCAST = str(Path(sys.executable).parent / "tickcast")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive free ports (servers whose ports follow one another)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65536:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found in {attempts} attempts")


def free_platform_ports(kafka_nodes: int = 1, spark_workers: int = 0) -> dict[str, str]:
    """``TICKCAST_*_PORT`` settings that put a whole platform on free loopback ports, so that a
    scratch platform (a test's, a benchmark's) runs beside another one. Blocks where servers take
    consecutive ports: two per Kafka node, one exporter per node, the Spark master's web UI then
    each worker's."""
    kafka = free_port_block(2 * kafka_nodes)
    env = {"TICKCAST_KAFKA_BROKER_PORT": str(kafka), "TICKCAST_KAFKA_CONTROLLER_PORT": str(kafka + 1),
           "TICKCAST_SPARK_MASTER_WEBUI_PORT": str(free_port_block(spark_workers + 1)),
           "TICKCAST_KAFKA_JMX_EXPORTER_PORT": str(free_port_block(kafka_nodes)) if kafka_nodes > 1 else "0"}
    for name in ("API", "DASHBOARD", "MLFLOW", "PROMETHEUS", "PIPELINE_METRICS", "AIRFLOW", "POSTGRES", "REDIS",
                 "SPARK_MASTER"):
        env[f"TICKCAST_{name}_PORT"] = str(free_port())
    return env


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


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 1.0,
               on_timeout: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
