"""Retraining, weekly (Saturday 03:00 UTC) and whenever the monitor asks: the experiment of
TICKCAST_RETRAIN_CONFIG (experiments/demo.yaml by default; on the demo platform its planted
history is loaded first if its symbols have no bars), its features backfilled, evaluated
walk-forward, trained and registered as challengers on the bars before the logical date, then
each put to the promotion gate; the live scorer picks a new champion pair up by itself.
Report: $TICKCAST_HOME/reports/retrain/<logical date>.json; evaluation files:
$TICKCAST_HOME/evaluations/<experiment>-<logical date>/."""

from __future__ import annotations

from airflow.sdk import task
from tickcast_dags import TICKCAST_PYTHON, tickcast_dag


@tickcast_dag("retrain", "0 3 * * 6", __doc__)
def retrain():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def prepare_features() -> dict:
        from spark_jobs.demo_market import prepare_retrain_features
        from tickcast.core.settings import load_settings
        from tickcast.models.lifecycle import retrain_config

        settings = load_settings()
        return prepare_retrain_features(settings, retrain_config(settings))

    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def train(run_key: str, logical_date: str) -> dict:
        # Imports inside each task: external_python runs the function's source alone.
        from datetime import datetime

        from tickcast.core.settings import load_settings
        from tickcast.models.lifecycle import scheduled_train

        return scheduled_train(load_settings(), run_key, datetime.fromisoformat(logical_date))

    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def promote(run_key: str, trained: dict) -> dict:
        from tickcast.core.settings import load_settings
        from tickcast.models.lifecycle import scheduled_promote

        return scheduled_promote(load_settings(), run_key, trained)

    trained = train("{{ ts_nodash }}", "{{ logical_date.isoformat() }}")
    prepare_features() >> trained
    promote("{{ ts_nodash }}", trained)


retrain()
