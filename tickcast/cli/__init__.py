"""The one command line: ``tickcast``. Each group lives in a module of this package."""

from __future__ import annotations

import logging

import typer

from tickcast.cli import (
    airflow,
    alerts,
    altdata,
    apikeys,
    corporate_actions,
    features,
    feeds,
    history,
    maintain,
    metrics,
    models,
    platform,
    quality,
    score,
    serve,
    stream,
    users,
)

app = typer.Typer(
    name="tickcast",
    help="TickCast: live market ticks -> Kafka -> Spark -> Delta -> predictions, API and dashboard.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging")) -> None:
    # Files TickCast writes (tables, stores, logs, reports) are its user's only: umask 077.
    from tickcast.platform.permissions import restrict_process

    restrict_process()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


platform.register(app)
feeds.register(app)
stream.register(app)
serve.register(app)
features.register(app)
quality.register(app)
corporate_actions.register(app)
history.register(app)
maintain.register(app)
metrics.register(app)
score.register(app)
models.register(app)
apikeys.register(app)
alerts.register(app)
airflow.register(app)
altdata.register(app)
users.register(app)

if __name__ == "__main__":
    app()
