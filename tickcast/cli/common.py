"""The `tickcast` command groups, one module each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from tickcast.core.settings import Settings

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """End a command as one red line on stderr and exit code 1."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def load_settings(**overrides: object) -> Settings:
    """This command's settings (``tickcast.core.settings.load_settings``); invalid ones end the
    command with one line per problem and exit code 2, as a bad option does."""
    from tickcast.core.settings import SettingsError
    from tickcast.core.settings import load_settings as load

    try:
        return load(**overrides)
    except SettingsError as exc:
        for problem in exc.problems:
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def with_merge_spark(settings: Settings, app_name: str, work: Callable[[SparkSession], T], failure: str) -> T:
    """``work(spark)`` in a Spark session made for MERGEs of small local tables; a Spark or
    backfill error ends the command as ``failure: <first line>``, and Spark always stops."""
    import logging

    from pyspark.errors import PySparkException

    from spark_jobs.backfill import BackfillError
    from spark_jobs.session import build_spark

    # py4j says goodbye at INFO on every shutdown; not news for the user.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        # The merge source is a small local table: re-reading it is cheaper than checkpointing it.
        spark = build_spark(settings, app_name,
                            extra_conf={"spark.databricks.delta.merge.materializeSource": "none"})
    except RuntimeError as exc:
        fail(str(exc))
    try:
        return work(spark)
    except (PySparkException, BackfillError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"{failure}: {first_line}")
    finally:
        spark.stop()
