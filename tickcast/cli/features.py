"""`tickcast features ...`: compute features in batch, and the Feast feature store."""

from __future__ import annotations

import typer

from tickcast.cli.common import fail, load_settings

features_app = typer.Typer(
    help="Technical features: batch backfill into Delta `features`, and the Feast feature store.",
    no_args_is_help=True,
)


@features_app.command("backfill")
def backfill(
    symbol: list[str] = typer.Option(
        None, "--symbol", "-s", help="Only this symbol (repeatable). Default: every symbol with bars."
    ),
    interval: str = typer.Option(
        None, "--interval", "-i", help="1d or 1m. Default: both."
    ),
) -> None:
    """Recompute features from the full bar history into Delta `features`.

    Uses the same implementation as the stream; the symbols' existing feature rows are
    replaced (re-running gives the same table). Run it after loading history with
    `tickcast backfill` (`tickcast corporate-actions apply` recomputes what it adjusts itself).
    """
    from spark_jobs.features_backfill import backfill_features
    from spark_jobs.session import build_spark
    from tickcast.catalog.featureindex import MarketIndexMismatch
    from tickcast.core.intervals import INTERVAL_NAMES

    if interval is not None and interval not in INTERVAL_NAMES:
        fail(f"--interval must be one of {', '.join(INTERVAL_NAMES)}, not {interval!r}")
    settings = load_settings()
    spark = build_spark(settings, "tickcast-features-backfill")
    try:
        results = backfill_features(
            spark, settings, symbols=list(symbol) if symbol else None,
            intervals=(interval,) if interval else INTERVAL_NAMES,
        )
    except MarketIndexMismatch as exc:
        fail(str(exc))
    finally:
        spark.stop()
    for result in results:
        typer.echo(result.summary())


def register(app: typer.Typer) -> None:
    from tickcast.cli import featurestore as featurestore_cli

    featurestore_cli.register(features_app)
    app.add_typer(features_app, name="features")
