"""`tickcast features ...`: compute features in batch, and the Feast feature store."""

from __future__ import annotations

import typer

features_app = typer.Typer(
    help="Technical features: batch backfill into Delta `features`, and the Feast feature store.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    from tickcast.commands import featurestore_cli

    featurestore_cli.register(features_app)
    app.add_typer(features_app, name="features")
