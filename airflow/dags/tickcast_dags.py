"""What every TickCast DAG shares (no DAG here): the platform's interpreter and CLI, the default
task arguments (retries with exponential backoff), a deadline per run, and the callbacks that
tell the alert engine (`tickcast alerts report`):

- a task that failed after its last retry is an `airflow_task_failed` incident for its DAG
  (critical). Retries themselves report nothing: only the final failure is an incident.
- a run not finished within its DAG's deadline after it was queued is an
  `airflow_deadline_missed` incident for its DAG (warning): Airflow 3's Deadline Alert (what
  replaced the SLA). The scheduler finds the missed deadline and hands the callback
  (`deadline_missed`, a SyncCallback) to the executor, which runs it with the DAG bundle on
  sys.path; a run that succeeds before its deadline has it deleted by the scheduler.
- the DAG's next successful run resolves both incidents."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The platform's environment, where the domain code lives (Airflow's own has none of it).
TICKCAST_PYTHON = os.environ.get("TICKCAST_PYTHON") or str(REPO / ".venv" / "bin" / "python")
TICKCAST_BIN = os.environ.get("TICKCAST_BIN") or str(REPO / ".venv" / "bin" / "tickcast")
TAGS = ["tickcast"]

log = logging.getLogger(__name__)


# The pipeline event kinds these callbacks report (tickcast/core/events.py), and their severities.
TASK_FAILED = "airflow_task_failed"
DEADLINE_MISSED = "airflow_deadline_missed"
SEVERITY = {TASK_FAILED: "critical", DEADLINE_MISSED: "warning"}

# How long a run may take, from when it was queued, before it is an `airflow_deadline_missed`
# incident: a few times its usual run time, with room for a retry's backoff (`tickcast_dag`'s
# ``deadline`` overrides it). A DAG not listed gets DEFAULT_DEADLINE.
DEADLINES = {
    "maintenance": timedelta(minutes=10),        # ~7 s a run, every 10 minutes
    "corporate_actions": timedelta(minutes=5),   # seconds a run, every 5 minutes, not retried
    "monitor": timedelta(minutes=15),            # ~1 min a run, hourly
    "alt_data": timedelta(hours=1),              # minutes a run, daily
    "retrain": timedelta(hours=1),               # ~10-15 min on the demo, weekly or on drift
}
DEFAULT_DEADLINE = timedelta(hours=1)


def report(status: str, dag_id: str, message: str, *, kind: str = TASK_FAILED, **details: Any) -> bool:
    """One pipeline event of ``kind`` for the DAG's incident (subject ``airflow:<dag_id>``, the
    kind's severity); a failure to report is logged, not raised (the task's own outcome stands),
    and returned as False."""
    command = [TICKCAST_BIN, "alerts", "report", kind, f"airflow:{dag_id}", "--status", status,
               "--severity", SEVERITY[kind], "--message", message[:1500],
               *(arg for key, value in details.items() for arg in ("--detail", f"{key}={value}"))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("could not report %s %s for %s: %s", status, kind, dag_id, exc)
        return False
    if done.returncode != 0:
        log.error("could not report %s %s for %s: %s", status, kind, dag_id,
                  (done.stderr or done.stdout).strip()[-500:])
        return False
    return True


def task_failed(context: dict[str, Any]) -> None:
    ti = context["ti"]
    error = str(context.get("exception") or "no exception recorded").splitlines()[0][:500]
    report("firing", ti.dag_id, f"task {ti.task_id} of {ti.dag_id} failed after {ti.try_number} attempt(s): {error}",
           task=ti.task_id, run=context.get("run_id", ""), attempts=ti.try_number)


def dag_succeeded(context: dict[str, Any]) -> None:
    # A run that had no task to run (a logical date before the DAG's start) gets a context without its run.
    dag_run = context.get("dag_run")
    dag_id = dag_run.dag_id if dag_run is not None else context["dag"].dag_id
    for kind in (TASK_FAILED, DEADLINE_MISSED):
        report("resolved", dag_id, f"{dag_id} ran successfully", kind=kind,
               run=dag_run.run_id if dag_run is not None else "")


def _instant(value: Any) -> datetime | None:
    """A time from the callback's context: a datetime, or its ISO text (the REST API's form)."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def deadline_missed(context: dict[str, Any], dag_id: str, deadline: str) -> None:
    """The Deadline Alert's callback: the run in ``context`` was not finished ``deadline`` after it
    was queued. Run by the executor (SyncCallback) with what the scheduler passes: ``context`` is
    ``{"dag_run": <the run as the REST API shows it, a dict>, "deadline": {"id", "deadline_time"}}``
    and the other arguments are the alert's own kwargs. Raises when the event could not be
    reported (Airflow then shows the callback failed)."""
    run = context.get("dag_run") or {}
    run_id = run.get("dag_run_id") or "?"
    due = _instant((context.get("deadline") or {}).get("deadline_time"))
    state, ended = run.get("state"), _instant(run.get("end_date"))
    # Airflow deletes a deadline only when its run succeeds in time: a run that failed in time was
    # reported as airflow_task_failed, and was not late.
    if state == "failed" and ended is not None and due is not None and ended <= due:
        log.info("run %s of %s failed before its deadline %s: not a missed deadline", run_id, dag_id, due)
        return
    due = due.isoformat() if due is not None else "unknown"
    message = (f"run {run_id} of {dag_id} not finished {deadline} after it was queued "
               f"(deadline {due}; now {state or 'unknown'})")
    if not report("firing", dag_id, message, kind=DEADLINE_MISSED, run=run_id, state=state or "",
                  deadline=due, queued_at=run.get("queued_at") or ""):
        raise RuntimeError(f"could not report the missed deadline of {dag_id} (see the log above)")


def default_args(**overrides: Any) -> dict[str, Any]:
    return {"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10), "on_failure_callback": task_failed, **overrides}


START = datetime(2026, 1, 1)
# Parsed by `airflow dags test`: no deadline then. Airflow 3.3.2's DAG.test() fails a run that
# succeeds when its DAG has one (DagRun.update_state looks the DAG's deadlines up by the id of their
# stored rows, and DAG.test() hands it the DAG serialized in memory, whose deadlines are not ids:
# "'dict' object has no attribute 'hex'"); and only the scheduler evaluates deadlines, which a
# `dags test` run never meets.
DAGS_TEST = sys.argv[1:3] == ["dags", "test"]


def deadline_alert(dag_id: str, interval: timedelta) -> Any:
    """The DAG's Deadline Alert: each run due ``interval`` after it was queued (manual runs too,
    which may have no logical date), else ``deadline_missed`` is run by the executor."""
    from airflow.sdk import DeadlineAlert, DeadlineReference, SyncCallback

    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=interval,
                         callback=SyncCallback(deadline_missed, kwargs={"dag_id": dag_id, "deadline": str(interval)}),
                         name=f"{dag_id} late")


def tickcast_dag(dag_id: str, schedule: Any, doc: str | None, *, deadline: timedelta | None = None,
                 **overrides: Any) -> Any:
    """``@dag`` with what every TickCast DAG shares: no catch-up, one run at a time, retries with
    backoff, a deadline per run (``deadline``, else DEADLINES's), the failure, lateness and
    success reports, the tag, its module docstring as its doc."""
    from airflow.sdk import dag

    interval = deadline or DEADLINES.get(dag_id, DEFAULT_DEADLINE)
    settings: dict[str, Any] = {"start_date": START, "catchup": False, "max_active_runs": 1,
                                "default_args": default_args(), "on_success_callback": dag_succeeded,
                                "deadline": None if DAGS_TEST else deadline_alert(dag_id, interval),
                                "tags": TAGS, "doc_md": doc}
    return dag(dag_id=dag_id, schedule=schedule, **{**settings, **overrides})
