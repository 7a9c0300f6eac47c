"""What every TickCast DAG shares (no DAG here): the platform's interpreter and CLI, the default
task arguments (retries with exponential backoff), and the callbacks that tell the alert engine:
a task that failed after its last retry is an `airflow_task_failed` incident for its DAG
(`tickcast alerts report`), and the DAG's next successful run resolves it. Retries themselves
report nothing: only the final failure is an incident."""

from __future__ import annotations

import logging
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The platform's environment, where the domain code lives (Airflow's own has none of it).
TICKCAST_PYTHON = os.environ.get("TICKCAST_PYTHON") or str(REPO / ".venv" / "bin" / "python")
TICKCAST_BIN = os.environ.get("TICKCAST_BIN") or str(REPO / ".venv" / "bin" / "tickcast")
TAGS = ["tickcast"]

log = logging.getLogger(__name__)


def report(status: str, dag_id: str, message: str, **details: Any) -> None:
    """One pipeline event for the DAG's incident; a failure to report is logged, not raised (the
    task's own outcome stands)."""
    command = [TICKCAST_BIN, "alerts", "report", "airflow_task_failed", f"airflow:{dag_id}", "--status", status,
               "--severity", "critical", "--message", message[:1500],
               *(arg for key, value in details.items() for arg in ("--detail", f"{key}={value}"))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("could not report %s for %s: %s", status, dag_id, exc)
        return
    if done.returncode != 0:
        log.error("could not report %s for %s: %s", status, dag_id, (done.stderr or done.stdout).strip()[-500:])


def task_failed(context: dict[str, Any]) -> None:
    ti = context["ti"]
    error = str(context.get("exception") or "no exception recorded").splitlines()[0][:500]
    report("firing", ti.dag_id, f"task {ti.task_id} of {ti.dag_id} failed after {ti.try_number} attempt(s): {error}",
           task=ti.task_id, run=context.get("run_id", ""), attempts=ti.try_number)


def dag_succeeded(context: dict[str, Any]) -> None:
    # A run that had no task to run (a logical date before the DAG's start) gets a context without its run.
    dag_run = context.get("dag_run")
    dag_id = dag_run.dag_id if dag_run is not None else context["dag"].dag_id
    report("resolved", dag_id, f"{dag_id} ran successfully", run=dag_run.run_id if dag_run is not None else "")


def default_args(**overrides: Any) -> dict[str, Any]:
    return {"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10), "on_failure_callback": task_failed, **overrides}


START = datetime(2026, 1, 1)


def tickcast_dag(dag_id: str, schedule: Any, doc: str | None, **overrides: Any) -> Any:
    """``@dag`` with what every TickCast DAG shares: no catch-up, one run at a time, retries with
    backoff, the failure and success reports, the tag, its module docstring as its doc."""
    from airflow.sdk import dag

    settings: dict[str, Any] = {"start_date": START, "catchup": False, "max_active_runs": 1,
                                "default_args": default_args(), "on_success_callback": dag_succeeded,
                                "tags": TAGS, "doc_md": doc}
    return dag(dag_id=dag_id, schedule=schedule, **{**settings, **overrides})
