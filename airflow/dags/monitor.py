"""The champion, watched hourly: drift of its inputs against its training data (PSI and KS per
feature), its confidence, and the realised performance of its stored predictions against its
predecessor's and the momentum baseline's on what happened (IC, hit rate) - written to Delta
model_monitoring (GET /api/v1/models/monitoring) and told to the alert engine (`drift`,
`model_rolled_back`). A champion that trails for a sustained window is rolled back in the task;
a drifted input triggers the `retrain` DAG."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import task
from tickcast_dags import TICKCAST_PYTHON, tickcast_dag


@tickcast_dag("monitor", timedelta(hours=1), __doc__)
def monitor():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def check_champion(run_key: str) -> dict:
        from tickcast.core.settings import load_settings
        from tickcast.models.watch import scheduled_monitor

        return scheduled_monitor(load_settings(), run_key)

    @task.short_circuit
    def drifted(report: dict) -> bool:
        return bool(report.get("drift"))

    retrain = TriggerDagRunOperator(task_id="trigger_retrain", trigger_dag_id="retrain",
                                    conf={"reason": "drift"}, wait_for_completion=False)
    drifted(check_champion("{{ ts_nodash }}")) >> retrain


monitor()
