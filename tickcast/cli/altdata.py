"""`tickcast altdata`: alternative data (news, macro, earnings, fundamentals) into Delta, and the
v2 alternative features built from it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import typer

from tickcast.cli.common import fail, load_settings

altdata_app = typer.Typer(
    help="Alternative data: collect news with sentiment, macro series, the earnings calendar and "
    "fundamentals into Delta alt_* tables (from each provider's API when its key is set, else from "
    "files dropped into $TICKCAST_HOME/inbox/alt_data/<kind>/), and build the v2 features.",
    no_args_is_help=True,
)

KIND_HELP = "news, macro, earnings or fundamentals (repeatable; default all four)."


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


@altdata_app.command("collect")
def collect_command(
    kinds: list[str] = typer.Argument(None, help=KIND_HELP),
    run_key: str = typer.Option(None, "--run-key", help="Name of this run (default: now, UTC, as 20261205T120000)."),
    start: str = typer.Option(None, "--start", help="First day asked of a provider (default: a week ago)."),
    end: str = typer.Option(None, "--end", help="Last day (default: today; for earnings 90 days ahead)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Collect alternative data into Delta (alt_news, alt_macro, alt_earnings, alt_fundamentals).

    Every record is stored or quarantined (Delta `quarantine`, stage alt_<kind>) with its reason;
    a payload that is not what the provider documents is quarantined whole. A provider's key in
    the environment (TICKCAST_FRED_API_KEY, TICKCAST_NEWS_API_KEY, TICKCAST_EARNINGS_API_KEY;
    TICKCAST_ALTDATA_SEC_USER_AGENT for EDGAR) switches its kind from the drop folder to its API.
    """
    from rich.console import Console
    from rich.table import Table

    from tickcast.altdata.collect import collect
    from tickcast.altdata.http import ProviderError
    from tickcast.core.altdata import KINDS

    chosen = list(kinds) if kinds else list(KINDS)
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise typer.BadParameter(f"no kind {', '.join(unknown)}; kinds: {', '.join(KINDS)}", param_hint="KINDS")
    settings = load_settings()
    key = run_key or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    reports = []
    for kind in chosen:
        try:
            reports.append(collect(settings, kind, key, start=_day(start, "--start"), end=_day(end, "--end")).as_dict())
        except ProviderError as exc:
            fail(f"{kind}: {exc}")
    if as_json:
        print(json.dumps(reports))
        return
    view = Table(title=f"alternative data, run {key}")
    for column in ("kind", "from", "read", "stored", "new", "quarantined", "reasons"):
        view.add_column(column)
    for r in reports:
        view.add_row(r["kind"], r["provider"], str(r["read"]), str(r["stored"]), str(r["inserted"]),
                     str(r["quarantined"]), ", ".join(f"{k} x{v}" for k, v in r["reasons"].items()))
    Console().print(view)


@altdata_app.command("features")
def features_command(
    start: str = typer.Option(None, "--start", help="First bar day (default: 30 days ago)."),
    end: str = typer.Option(None, "--end", help="Last bar day (default: today)."),
    everything: bool = typer.Option(False, "--all", help="Every stored daily bar."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Build the v2 alternative features of the stored daily bars into Delta alt_features, point
    in time (a value is used only by bars whose decision time is after its publication)."""
    from tickcast.altdata.build import build_alt_features

    report = build_alt_features(load_settings(), start=_day(start, "--start"), end=_day(end, "--end"),
                                everything=everything)
    if as_json:
        print(json.dumps(report))
    else:
        typer.echo(f"alt_features: {report['rows']} rows ({report['start']} to {report['end']}) "
                   f"in {report['seconds']} s")


def register(app: typer.Typer) -> None:
    app.add_typer(altdata_app, name="altdata")
