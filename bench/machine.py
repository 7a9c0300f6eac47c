"""The machine line every benchmark prints beside its figures, and where the figures are written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path


def describe_machine(*, java: bool = True) -> str:
    """Cores and CPU model, memory, OS, Python and (for JVM benchmarks) Java."""
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [f"{os.cpu_count()} cores ({cpu})", f"{mem_gib:.0f} GiB", platform.platform(),
             f"Python {platform.python_version()}"]
    if java:
        try:
            parts.append(subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0])
        except (OSError, IndexError):
            parts.append("java unknown")
    return ", ".join(parts)


def save_result(result: dict, path: Path) -> None:
    """The figures as JSON at ``path`` (bench/results/ by default), said on the last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {path}")
