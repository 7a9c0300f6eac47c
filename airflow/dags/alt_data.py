"""Alternative data, daily at 06:00 UTC: news headlines (with offline sentiment), macro series,
the earnings calendar and fundamentals collected side by side into Delta alt_* tables - each from
its provider's API when its key is set, else from the files dropped into
$TICKCAST_HOME/inbox/alt_data/<kind>/ - then the v2 alternative features of the daily bars of
the 30 days up to the logical date rebuilt point in time (Delta alt_features; all of them the
first time). A record that fails its checks is quarantined with
its reason. Reports: $TICKCAST_HOME/reports/alt_data/<logical date>-<kind>.json."""

from __future__ import annotations

from airflow.sdk import task
from tickcast_dags import TICKCAST_PYTHON, tickcast_dag

KINDS = ("news", "macro", "earnings", "fundamentals")


@tickcast_dag("alt_data", "0 6 * * *", __doc__)
def alt_data():
    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def collect(kind: str, run_key: str) -> dict:
        from tickcast.altdata.collect import scheduled_collect
        from tickcast.core.settings import load_settings

        return scheduled_collect(load_settings(), kind, run_key)

    @task.external_python(python=TICKCAST_PYTHON, expect_airflow=False)
    def build_features(run_key: str, logical_day: str) -> dict:
        from datetime import date

        from tickcast.altdata.build import scheduled_build
        from tickcast.core.settings import load_settings

        return scheduled_build(load_settings(), run_key, date.fromisoformat(logical_day))

    collected = [collect.override(task_id=f"collect_{kind}")(kind, "{{ ts_nodash }}") for kind in KINDS]
    collected >> build_features("{{ ts_nodash }}", "{{ ds }}")


alt_data()
