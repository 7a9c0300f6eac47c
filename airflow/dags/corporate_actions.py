"""Corporate actions dropped as files: every 5 minutes, each CSV in
$TICKCAST_HOME/inbox/corporate_actions (the format of `tickcast corporate-actions apply --help`)
is applied to the stored bars and features and moved to applied/<logical date>/; a refused file
goes to rejected/<logical date>/ with its reasons beside it, and the run fails (an
airflow_task_failed alert). Report: $TICKCAST_HOME/reports/corporate_actions/<logical date>.json."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from tickcast_dags import TAGS, TICKCAST_PYTHON, dag_succeeded, default_args


@dag(
    dag_id="corporate_actions",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    # Not retried: a retry would find the refused file moved aside and succeed, hiding the refusal.
    # A run that failed for another reason leaves its files in the inbox for the next run, 5 minutes on.
    default_args=default_args(retries=0),
    on_success_callback=dag_succeeded,
    tags=TAGS,
    doc_md=__doc__,
)
def corporate_actions():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def apply_dropped_files(run_key: str) -> dict:
        from spark_jobs.corporate_actions import apply_inbox
        from tickcast.core.settings import load_settings

        return apply_inbox(load_settings(), run_key)

    apply_dropped_files("{{ ts_nodash }}")


corporate_actions()
