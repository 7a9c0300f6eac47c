"""Reports of scheduled runs: ``reports/<kind>/<run key>.json`` under the home, one per run,
named by the run's logical date so a re-run of that date replaces its own."""

from __future__ import annotations

import json
from pathlib import Path

from tickcast.core.settings import Settings


def write_run_report(settings: Settings, kind: str, run_key: str, report: dict) -> Path:
    """Write ``report`` atomically (a reader never sees half of it); its path."""
    path = settings.home_dir / "reports" / kind / f"{run_key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(path)
    return path
