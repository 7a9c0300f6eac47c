"""Table maintenance, every TICKCAST_MAINTAIN_INTERVAL_SECONDS (600 by default): rows past
their retention deleted, small files compacted, VACUUM, log checkpoints - `tickcast maintain`,
run in the platform's environment. Each run writes its report under
$TICKCAST_HOME/reports/maintenance/<logical date>.json (a re-run overwrites its own)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task
from tickcast_dags import TAGS, TICKCAST_PYTHON, dag_succeeded, default_args

INTERVAL = timedelta(seconds=float(os.environ.get("TICKCAST_MAINTAIN_INTERVAL_SECONDS") or 600))


@dag(
    dag_id="maintenance",
    schedule=INTERVAL,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    on_success_callback=dag_succeeded,
    tags=TAGS,
    doc_md=__doc__,
)
def maintenance():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def maintain_tables(run_key: str) -> dict:
        from tickcast.catalog.maintenance import scheduled_run
        from tickcast.core.settings import load_settings

        return scheduled_run(load_settings(), run_key)

    maintain_tables("{{ ts_nodash }}")


maintenance()
