"""Feast commands under `tickcast features`: apply, training-set, online, materialize.

They configure Feast from Settings (TICKCAST_HOME, TICKCAST_FEAST_ONLINE_STORE, ...) through
``tickcast.catalog.featurestore``; Feast itself is imported only when a command runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from tickcast.catalog import tables
from tickcast.cli.common import fail, load_settings

SYMBOLS_HELP = "Comma-separated symbols, e.g. AAPL,MSFT"
INTERVAL_HELP = "Bar interval of the feature set: 1d or 1m"


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A failed command ends as one line and exit 1; --verbose shows the traceback instead."""
    from tickcast.catalog.featurestore import FeatureStoreError

    try:
        yield
    except typer.Exit:
        raise
    except FeatureStoreError as exc:
        fail(str(exc))
    except Exception as exc:  # Feast, Redis, delta-rs: their messages are the useful part
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        fail(f"{type(exc).__name__}: {exc} (--verbose for the traceback)")


def _settings():
    # Feast logs every registry refresh at INFO, and the CLI logs at INFO unless --verbose.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("feast").setLevel(logging.WARNING)
    return load_settings()


def _symbols(raw: str) -> list[str]:
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    if not symbols:
        fail("--symbols: give at least one symbol")
    return symbols


def _store_description(settings) -> str:
    if settings.feast_online_store == "redis":
        # host:port only: the rest of the connection string may carry the password.
        return f"redis {settings.feast_redis_connection_string.split(',')[0]}"
    return f"sqlite {settings.feast_dir / 'online.db'}"


def apply_command() -> None:
    """Register the Feast repo objects in TICKCAST_HOME's registry (idempotent).

    Entities symbol and interval, the `technical` feature view over the Delta
    `features` table, the `features_push` push source and the versioned
    feature services (technical_1d_<version>, technical_1m_<version>). Views
    and services of this repo that it no longer defines are removed, as
    `feast apply` does.
    """
    from tickcast.catalog import featurestore

    settings = _settings()
    with _clear_errors():
        featurestore.apply(settings)
        store = featurestore.feature_store(settings)
    typer.echo(f"registry     {settings.feast_dir / 'registry.db'}")
    typer.echo(f"online store {_store_description(settings)}")
    typer.echo(f"source       {tables.table_path(settings, 'features')} (Delta)")
    typer.echo("entities     " + ", ".join(sorted(e.name for e in store.list_entities())))
    typer.echo("views        " + ", ".join(sorted(v.name for v in store.list_feature_views())))
    typer.echo("push sources " + ", ".join(sorted(
        s.name for s in store.list_data_sources() if type(s).__name__ == "PushSource"
    )))
    typer.echo("services     " + ", ".join(sorted(s.name for s in store.list_feature_services())))


def training_set_command(
    symbols: str = typer.Option(..., "--symbols", "-s", help=SYMBOLS_HELP),
    start: str = typer.Option(..., "--start", help="First label time, ISO 8601 (naive = UTC), e.g. 2024-01-02"),
    end: str = typer.Option(..., "--end", help="Last label time, ISO 8601 (naive = UTC)"),
    interval: str = typer.Option("1d", "--interval", "-i", help=INTERVAL_HELP),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the rows to FILE.parquet or FILE.csv instead of printing a summary"
    ),
) -> None:
    """Point-in-time-correct feature rows for training.

    One row per bar end (window_end) of each symbol from --start to --end
    inclusive, read from the Delta `features` table. Each row carries the
    features of the latest bar closed at or before its event_timestamp, never
    a later one, and that bar's window_start.
    """
    from tickcast.catalog import featurestore

    if output is not None and output.suffix.lower() not in (".parquet", ".csv"):
        fail(f"--output: {output} must end in .parquet or .csv")
    settings = _settings()
    with _clear_errors():
        rows = featurestore.training_set(settings, _symbols(symbols), start, end, interval)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix.lower() == ".parquet":
            rows.to_parquet(output, index=False)
        else:
            rows.to_csv(output, index=False)
        typer.echo(f"wrote {len(rows)} rows to {output}")
        return
    _print_training_summary(rows)


def _print_training_summary(rows) -> None:
    import pandas as pd

    if rows.empty:
        typer.echo("0 rows: no bars of these symbols in that range")
        return
    unmatched = int(rows["window_start"].isna().sum())
    typer.echo(
        f"{len(rows)} rows, {rows['symbol'].nunique()} symbols, "
        f"{rows['event_timestamp'].min().isoformat()} .. {rows['event_timestamp'].max().isoformat()}, "
        f"{unmatched} without a closed bar (nulls)"
    )
    head = rows.drop(columns=["interval"]).head(10)
    with pd.option_context("display.width", 160, "display.max_columns", 9):
        typer.echo(head.to_string(index=False, max_cols=9))


def online_command(
    symbols: str = typer.Option(..., "--symbols", "-s", help=SYMBOLS_HELP),
    interval: str = typer.Option("1d", "--interval", "-i", help=INTERVAL_HELP),
    features: str | None = typer.Option(
        None, "--features", "-f", help="Comma-separated feature names (default: the interval's feature service)"
    ),
) -> None:
    """Latest feature values in the online store, one column per symbol."""
    import pandas as pd

    from tickcast.catalog import featurestore

    settings = _settings()
    wanted = [f.strip() for f in features.split(",") if f.strip()] if features else None
    with _clear_errors():
        values = featurestore.online_features(settings, _symbols(symbols), interval, wanted)
    table = values.drop(columns=["interval"]).set_index("symbol").T
    typer.echo(f"online store {_store_description(settings)}, interval {interval}")
    with pd.option_context("display.width", 160, "display.max_rows", None, "display.max_columns", None):
        typer.echo(table.to_string())


def materialize_command(
    end: str | None = typer.Option(None, "--end", help="Load bars closed up to this time, ISO 8601 (default: now)"),
) -> None:
    """Load the newest closed bar per symbol and interval into the online store.

    Incremental from the previous run (the first run covers the whole Delta
    `features` table). The stream keeps the online store fresh by pushing;
    this is for backfills and rebuilds.
    """
    from tickcast.catalog import featurestore

    settings = _settings()
    with _clear_errors():
        used = featurestore.materialize(settings, end)
    typer.echo(f"materialized up to {used.isoformat()} into {_store_description(settings)}")


def register(features_app: typer.Typer) -> None:
    """Add the Feast commands to the `tickcast features` group."""
    features_app.command("apply")(apply_command)
    features_app.command("training-set")(training_set_command)
    features_app.command("online")(online_command)
    features_app.command("materialize")(materialize_command)
