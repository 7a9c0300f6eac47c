"""The champion, watched hourly: drift of its inputs against its training data (PSI and KS per
feature), its confidence, and the realised performance of its stored predictions against its
predecessor's and the momentum baseline's on what happened (IC, hit rate) - written to Delta
model_monitoring (GET /api/v1/models/monitoring) and told to the alert engine (`drift`,
`model_rolled_back`). A champion that trails for a sustained window is rolled back in the task;
a drifted input triggers the `retrain` DAG."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from tickcast_dags import TAGS, TICKCAST_PYTHON, dag_succeeded, default_args


@dag(
    dag_id="monitor",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    on_success_callback=dag_succeeded,
    tags=TAGS,
    doc_md=__doc__,
)
def monitor():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def check_champion(run_key: str) -> dict:
        from tickcast.catalog.reports import write_run_report
        from tickcast.core.settings import load_settings
        from tickcast.models.watch import scheduled_monitor

        settings = load_settings()
        report = scheduled_monitor(settings, run_key)
        write_run_report(settings, "monitor", run_key, report)
        return report

    @task.short_circuit
    def drifted(report: dict) -> bool:
        return bool(report.get("drift"))

    retrain = TriggerDagRunOperator(task_id="trigger_retrain", trigger_dag_id="retrain",
                                    conf={"reason": "drift"}, wait_for_completion=False)
    drifted(check_champion("{{ ts_nodash }}")) >> retrain


monitor()
