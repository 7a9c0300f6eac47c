"""Table maintenance, every TICKCAST_MAINTAIN_INTERVAL_SECONDS (600 by default): rows past
their retention deleted, small files compacted, VACUUM, log checkpoints - `tickcast maintain`,
run in the platform's environment - then Feast's online store brought up to date with what batch
jobs wrote (`tickcast features materialize`). Each run writes its report under
$TICKCAST_HOME/reports/maintenance/<logical date>.json (a re-run overwrites its own)."""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import task
from tickcast_dags import TICKCAST_PYTHON, tickcast_dag

INTERVAL = timedelta(seconds=float(os.environ.get("TICKCAST_MAINTAIN_INTERVAL_SECONDS") or 600))


@tickcast_dag("maintenance", INTERVAL, __doc__)
def maintenance():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def maintain_tables(run_key: str) -> dict:
        from tickcast.catalog.maintenance import scheduled_run
        from tickcast.core.settings import load_settings

        return scheduled_run(load_settings(), run_key)

    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def materialize_features() -> dict:
        from tickcast.catalog import featurestore
        from tickcast.catalog.tables import FEATURES, open_table
        from tickcast.core.settings import load_settings

        settings = load_settings()
        if open_table(settings, FEATURES) is None:
            return {"materialized": False, "reason": "no features table yet"}
        # The stream pushes every micro-batch online; this catches up what a backfill, a
        # corporate action or the alt_data DAG wrote in batch.
        return {"materialized": True, "until": featurestore.materialize(settings).isoformat()}

    maintain_tables("{{ ts_nodash }}") >> materialize_features()


maintenance()
