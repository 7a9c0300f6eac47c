"""`tickcast metrics`: the pipeline's Prometheus metrics (what `tickcast up` runs as program `metrics`)."""

from __future__ import annotations

import typer

from tickcast.cli.common import fail, load_settings

metrics_app = typer.Typer(
    help="Prometheus metrics of the pipeline: each streaming query's rates, batch duration and lag, "
    "the scorer's cycle time.",
    no_args_is_help=True,
)


@metrics_app.command("serve")
def serve_command(
    port: int = typer.Option(None, help="Port (default TICKCAST_PIPELINE_METRICS_PORT), on TICKCAST_PIPELINE_METRICS_HOST "
                             "(127.0.0.1)."),
) -> None:
    """Serve /metrics (on loopback unless TICKCAST_PIPELINE_METRICS_HOST says otherwise) until SIGTERM/Ctrl-C, read from the streaming progress files at
    every scrape (the numbers `tickcast status` shows). Prometheus scrapes it."""
    from tickcast.platform import exporter

    try:
        exporter.serve(load_settings(), port)
    except OSError as exc:  # the port taken, most often
        fail(f"cannot serve the pipeline metrics: {exc}")


@metrics_app.command("config")
def config_command() -> None:
    """Print the Prometheus scrape config `tickcast up` writes (for a Prometheus of your own)."""
    import yaml

    from tickcast.platform import prometheus

    typer.echo(yaml.safe_dump(prometheus.scrape_config(load_settings()), sort_keys=False), nl=False)


@metrics_app.command("grafana")
def grafana_command(
    check: bool = typer.Option(False, "--check", help="Only check that the files are up to date (exit 1 if not)."),
) -> None:
    """Write the Grafana dashboards of infra/grafana/ from the charts the Dash pipeline page draws
    (tickcast/platform/panels.py), so that both show the same PromQL."""
    from tickcast.platform import grafana

    if check:
        stale = grafana.stale()
        if stale:
            fail(f"out of date (run `tickcast metrics grafana`): {', '.join(str(p) for p in stale)}")
        typer.echo(f"up to date: {grafana.GRAFANA_DIR}")
        return
    for path in grafana.write():
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(metrics_app, name="metrics")
