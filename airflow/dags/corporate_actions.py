"""Corporate actions dropped as files: every 5 minutes, each CSV in
$TICKCAST_HOME/inbox/corporate_actions (the format of `tickcast corporate-actions apply --help`)
is applied to the stored bars and features and moved to applied/<logical date>/; a refused file
goes to rejected/<logical date>/ with its reasons beside it, and the run fails (an
airflow_task_failed alert). Report: $TICKCAST_HOME/reports/corporate_actions/<logical date>.json."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import task
from tickcast_dags import TICKCAST_PYTHON, default_args, tickcast_dag


# Not retried: a retry would find the refused file moved aside and succeed, hiding the refusal.
# A run that failed for another reason leaves its files in the inbox for the next run, 5 minutes on.
@tickcast_dag("corporate_actions", timedelta(minutes=5), __doc__, default_args=default_args(retries=0))
def corporate_actions():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def apply_dropped_files(run_key: str) -> dict:
        from spark_jobs.corporate_actions import apply_inbox
        from tickcast.core.settings import load_settings

        return apply_inbox(load_settings(), run_key)

    apply_dropped_files("{{ ts_nodash }}")


corporate_actions()
