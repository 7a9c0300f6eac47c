"""Helpers for tests and benchmarks: free ports and a throwaway real Kafka broker."""

from __future__ import annotations

import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tickcast import broker
from tickcast.settings import Settings


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
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
