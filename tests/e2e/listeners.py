"""What a running platform listens on: every TCP socket opened by supervisord's programs and their
children (``ss``), to check that each is on loopback."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path


def _descendants(root_pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = proc_stat.read_text().split(" (", 1)
        except OSError:
            continue
        ppid = int(rest.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(pid))
    found, todo = {root_pid}, [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _listeners() -> list[tuple[str, int, set[int]]]:
    """(address, port, pids) of every listening TCP socket, from ``ss -ltnpH``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    result = []
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        result.append((address.strip("[]"), int(port), pids))
    return result


def platform_listeners(home: Path) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket listened on by the platform run from ``home``."""
    supervisord = int((home / "run" / "supervisord.pid").read_text())
    ours = _descendants(supervisord)
    return [(address, port) for address, port, pids in _listeners() if pids & ours]


def is_loopback(address: str) -> bool:
    if address == "*":
        return False
    ip = ipaddress.ip_address(address.split("%")[0])
    # A JVM bound to 127.0.0.1 on a dual-stack socket shows as ::ffff:127.0.0.1.
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback
