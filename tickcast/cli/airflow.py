"""`tickcast airflow`: Airflow with the platform's configuration (its components, its CLI)."""

from __future__ import annotations

import typer

from tickcast.cli.common import fail, load_settings

airflow_app = typer.Typer(
    help="Airflow, the batch side: its components as the platform runs them, and its CLI with the "
    "platform's configuration (AIRFLOW_HOME under TICKCAST_HOME, the DAGs in airflow/dags).",
    no_args_is_help=True,
)


@airflow_app.command("run")
def run_component(component: str = typer.Argument(..., help="api-server, scheduler, dag-processor or triggerer.")) -> None:
    """Become one Airflow component (what `tickcast up` runs as airflow-COMPONENT), after creating
    or upgrading the metadata database once."""
    from tickcast.platform import airflow

    if component not in airflow.COMPONENTS:
        fail(f"unknown component {component!r}; one of {', '.join(airflow.COMPONENTS)}")
    try:
        airflow.exec_component(load_settings(), component)
    except (airflow.AirflowMissing, RuntimeError) as exc:
        fail(str(exc))


@airflow_app.command("cli", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow_cli(ctx: typer.Context) -> None:
    """The `airflow` command with the platform's configuration, e.g. `tickcast airflow cli dags list`
    or `tickcast airflow cli dags test maintenance 2026-12-05`."""
    from tickcast.platform import airflow

    try:
        code = airflow.run_cli(load_settings(), list(ctx.args))
    except (airflow.AirflowMissing, RuntimeError) as exc:
        fail(str(exc))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(airflow_app, name="airflow")
