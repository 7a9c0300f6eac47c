"""`tickcast alerts`: the alert engine, its rules and watchlists, the history of what was sent."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import typer

from tickcast.cli.common import fail, load_settings
from tickcast.core.events import PIPELINE_EVENT_KINDS

alerts_app = typer.Typer(
    help="Alerts by SMS (Twilio), e-mail (SendGrid) and webhook on predictions and on pipeline events. "
    "Rules live in $TICKCAST_HOME/alerts/alerts.sqlite (TICKCAST_ALERTS_DATABASE_URL for another "
    "database). A channel without credentials is a dry run: messages are rendered, logged and "
    "recorded as sent.",
    no_args_is_help=True,
)
rules_app = typer.Typer(help="Add, list, enable, disable and delete alert rules.", no_args_is_help=True)
watchlist_app = typer.Typer(help="Named lists of symbols that rules can watch.", no_args_is_help=True)
alerts_app.add_typer(rules_app, name="rules")
alerts_app.add_typer(watchlist_app, name="watchlist")


def _store():
    from tickcast.alerts.store import AlertStore

    return AlertStore(load_settings().alerts_db_url)


def _when(at: Any) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


@alerts_app.command("run")
def run(
    seconds: float = typer.Option(0, "--seconds", help="Stop after this long (0: until SIGTERM or Ctrl-C)."),
) -> None:
    """Run the alert engine: evaluate rules on Kafka `predictions` and pipeline events, deliver
    the alerts, watch the streaming parts. `tickcast up` runs it as program `alerts`."""
    from tickcast.alerts.engine import AlertEngine

    settings = load_settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    AlertEngine(settings).run(stop, stop_after_seconds=seconds or None)


@rules_app.command("add")
def add_rule(
    name: str = typer.Argument(..., help="A unique name (letters, digits, space, '_', '.', '-')."),
    to: list[str] = typer.Option(
        ..., "--to", help="A recipient as channel:address, repeatable: sms:+15551234567, email:oncall@example.com, "
        "webhook:https://chat.example.com/hook."),
    signal_is: str | None = typer.Option(None, "--signal", help="The prediction's signal is BUY, SELL or HOLD."),
    previous: str | None = typer.Option(None, "--from", help="... and the previous one was this (a change, e.g. --from HOLD --signal BUY)."),
    min_confidence: float | None = typer.Option(None, "--min-confidence", help="Confidence at or above this (0-1)."),
    min_abs_return: float | None = typer.Option(None, "--min-abs-return", help="|predicted return| at or above this (0.01 = 1 %)."),
    band_contains: float | None = typer.Option(None, "--band-contains", help="The p10-p90 price band contains this price."),
    pipeline: list[str] = typer.Option([], "--pipeline", help="A pipeline event kind (repeatable) instead of signal conditions, e.g. ingest_stopped, scorer_baseline, delivery_dead."),
    min_severity: str = typer.Option("warning", "--min-severity", help="Pipeline rules: info, warning or critical."),
    symbols: list[str] = typer.Option([], "--symbol", "-s", help="A symbol to watch (repeatable; none: every symbol)."),
    watchlist: str | None = typer.Option(None, "--watchlist", help="Watch a named watchlist's symbols instead."),
    throttle: int = typer.Option(300, "--throttle", help="Seconds after a message before the same rule and subject may send again."),
    quiet: str | None = typer.Option(None, "--quiet-hours", help="HH:MM-HH:MM in which messages wait, e.g. 22:00-07:00."),
    timezone: str = typer.Option("UTC", "--timezone", help="The quiet hours' time zone (IANA, e.g. America/New_York)."),
    resolved: bool = typer.Option(False, "--resolved", help="Also send a message when the condition stops holding."),
    severity: str = typer.Option("warning", "--severity", help="The alert's severity: info, warning or critical."),
    from_file: Path | None = typer.Option(None, "--file", help="The whole rule as a JSON file (the API's body); the other options are ignored."),
) -> None:
    """Add a rule. Example: a confident BUY on S0001 by SMS, at most every 10 minutes:

        tickcast alerts rules add buy-s0001 --signal BUY --min-confidence 0.6 -s S0001 --to sms:+15551234567 --throttle 600
    """
    from pydantic import ValidationError

    from tickcast.alerts.rules import RuleSpec
    from tickcast.core.errors import ServiceError

    if from_file is not None:
        try:
            body = json.loads(from_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"{from_file}: {exc}")
        body["name"] = name
    else:
        recipients = []
        for item in to:
            channel, _, address = item.partition(":")
            if not address:
                fail(f"--to {item!r}: give channel:address, e.g. sms:+15551234567")
            recipients.append({"channel": channel, "address": address})
        body = {"name": name, "recipients": recipients, "symbols": symbols, "watchlist": watchlist,
                "throttle_seconds": throttle, "notify_resolved": resolved, "severity": severity}
        if pipeline:
            body["on_pipeline"] = {"kinds": pipeline, "min_severity": min_severity}
        else:
            body["on_signal"] = {k: v for k, v in {
                "signal": signal_is.upper() if signal_is else None, "previous_signal": previous.upper() if previous else None,
                "min_confidence": min_confidence, "min_abs_return": min_abs_return, "band_contains": band_contains,
            }.items() if v is not None}
        if quiet:
            start, _, end = quiet.partition("-")
            body["quiet_hours"] = {"start": start, "end": end, "timezone": timezone}
    try:
        spec = RuleSpec.model_validate(body)
        stored = _store().add_rule(spec)
    except ValidationError as exc:
        fail("the rule is not valid:\n" + "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors()))
    except ServiceError as exc:
        fail(exc.message)
    typer.echo(f"added rule {stored.id} {stored.name!r}")


@rules_app.command("list")
def list_rules(as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout.")) -> None:
    """Every rule: id, name, enabled, what it watches, who it tells."""
    rules = _store().rules()
    if as_json:
        typer.echo(json.dumps([{"id": r.id, **r.spec.model_dump(mode="json")} for r in rules], indent=1))
        return
    if not rules:
        typer.echo("No rules yet: tickcast alerts rules add --help")
        return
    for r in rules:
        condition = (r.spec.on_signal.model_dump(exclude_none=True) if r.spec.on_signal
                     else r.spec.on_pipeline.model_dump() if r.spec.on_pipeline else {})
        scope = (f"watchlist {r.spec.watchlist}" if r.spec.watchlist else ", ".join(r.spec.symbols) or "all symbols"
                 ) if r.spec.kind == "signal" else "pipeline"
        to = ", ".join(f"{x.channel}:{x.address}" for x in r.spec.recipients)
        typer.echo(f"{r.id:>4}  {r.name:<24} {'on ' if r.spec.enabled else 'off'}  {scope}: {condition} -> {to} "
                   f"(throttle {r.spec.throttle_seconds}s{', resolved' if r.spec.notify_resolved else ''})")


def _set_enabled(rule: str, enabled: bool) -> None:
    from tickcast.core.errors import ServiceError

    try:
        stored = _store().set_enabled(rule, enabled)
    except ServiceError as exc:
        fail(exc.message)
    typer.echo(f"rule {stored.id} {stored.name!r} {'enabled' if enabled else 'disabled'}")


@rules_app.command("enable")
def enable(rule: str = typer.Argument(..., help="The rule's name or id.")) -> None:
    """Enable a rule."""
    _set_enabled(rule, True)


@rules_app.command("disable")
def disable(rule: str = typer.Argument(..., help="The rule's name or id.")) -> None:
    """Disable a rule (kept, not evaluated)."""
    _set_enabled(rule, False)


@rules_app.command("delete")
def delete(rule: str = typer.Argument(..., help="The rule's name or id.")) -> None:
    """Delete a rule; the alerts it made stay in the history."""
    from tickcast.core.errors import ServiceError

    try:
        stored = _store().delete_rule(rule)
    except ServiceError as exc:
        fail(exc.message)
    typer.echo(f"deleted rule {stored.id} {stored.name!r}")


@watchlist_app.command("set")
def set_watchlist(
    name: str = typer.Argument(..., help="The watchlist's name."),
    symbols: list[str] = typer.Argument(..., help="Its symbols (replacing the ones it had)."),
) -> None:
    """Create or replace a watchlist."""
    _store().set_watchlist(name, symbols)
    typer.echo(f"watchlist {name!r}: {len(set(symbols))} symbol(s)")


@alerts_app.command("report")
def report_event(
    kind: str = typer.Argument(..., help="The event's kind: " + ", ".join(PIPELINE_EVENT_KINDS) + "."),
    subject: str = typer.Argument(..., help="Which part, e.g. airflow:maintenance (one incident per kind and subject)."),
    status: str = typer.Option("firing", "--status", help="firing (it is happening) or resolved (it has passed)."),
    severity: str = typer.Option("warning", "--severity", help="info, warning or critical."),
    message: str = typer.Option(..., "--message", "-m", help="What happened, in a sentence."),
    detail: list[str] = typer.Option(None, "--detail", help="KEY=VALUE, repeatable: shown with the message."),
) -> None:
    """Report a pipeline event to the alert engine (on TICKCAST_TOPIC_ALERTS), as the platform's own
    parts do: what Airflow's DAG callbacks run, and what a script of yours can run. Exits non-zero
    if the broker did not take it."""
    from pydantic import ValidationError

    from tickcast.catalog.events import EventPublisher
    from tickcast.core.events import PipelineEvent

    settings = load_settings()
    details = {}
    for item in detail or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--detail {item!r} is not KEY=VALUE")
        details[key] = value
    try:
        event = PipelineEvent.reported(kind, subject, status, message, severity=severity, details=details)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()))
    publisher = EventPublisher(settings, "events")
    publisher.report(event)
    if publisher.flush(30) or publisher.failed:
        fail(f"the event was not delivered to topic {settings.topic_alerts} on {settings.kafka_bootstrap_servers}")
    typer.echo(f"reported {event.status} {event.kind} on {event.subject}")


@alerts_app.command("history")
def history(
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10_000, help="How many alerts, newest first."),
    rule: str | None = typer.Option(None, "--rule", help="Only this rule's alerts (by name)."),
    subject: str | None = typer.Option(None, "--subject", help="Only this symbol's (or pipeline subject's)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """The alerts made, newest first, with each delivery's status (dry runs marked)."""
    alerts = _store().history(limit=limit, rule=rule, subject=subject)
    if as_json:
        typer.echo(json.dumps(alerts, indent=1, default=str))
        return
    if not alerts:
        typer.echo("No alerts yet.")
        return
    for a in alerts:
        typer.echo(f"{_when(a['created_at'])}  {a['status']:<9} {a['title']}")
        for d in a["deliveries"]:
            typer.echo(f"    {d['channel']:<7} {d['address']:<32} {d['status']:<8} attempts {d['attempts']}"
                       f"{' (dry run)' if d['dry_run'] else ''}{'  ' + d['provider_id'] if d['provider_id'] else ''}"
                       f"{'  error: ' + d['last_error'] if d['last_error'] and d['status'] != 'sent' else ''}")


@alerts_app.command("test")
def test_rule(rule: str = typer.Argument(..., help="The rule's name or id.")) -> None:
    """Send a test message to each of a rule's recipients, through the real path (the channel's
    client, retries, the outbox and the history), and wait for the outcome."""
    from datetime import UTC, datetime

    from tickcast.alerts.channels import channels_from_settings
    from tickcast.alerts.delivery import Dispatcher
    from tickcast.alerts.incidents import AlertDecision
    from tickcast.alerts.store import NewAlert
    from tickcast.core.errors import ServiceError

    settings = load_settings()
    store = _store()
    try:
        stored = store.rule(rule)
    except ServiceError as exc:
        fail(exc.message)
    channels = channels_from_settings(settings)
    now = datetime.now(UTC)
    dry = frozenset(n for n, c in channels.items() if c.dry_run)
    test = NewAlert(stored, "test", AlertDecision("test", "queued", now, now, None),
                    f"Test of rule {stored.name}: alerts reach you here",
                    {"kind": "test", "subject": "test", "severity": stored.spec.severity,
                     "message": f"a test message for rule {stored.name}", "at": now.isoformat(), "details": {}})
    with store.session() as session:
        [made] = store.add_alerts(session, [test], dry_run_channels=dry)
    # A person waits for the outcome: no wait between attempts longer than 30 s.
    dispatcher = Dispatcher.from_settings(store, channels, settings, cap_seconds=30)
    # This alert's deliveries only: the running engine delivers the rest of the outbox.
    outcomes = [f.result() for f in dispatcher.dispatch_due(limit=len(stored.spec.recipients), alert=made)]
    dispatcher.close()
    [alert] = store.history(limit=1, rule=stored.name, subject="test")
    for d in alert["deliveries"]:
        typer.echo(f"{d['channel']:<7} {d['address']:<32} {d['status']}{' (dry run)' if d['dry_run'] else ''}"
                   f"{'  ' + d['last_error'] if d['last_error'] and d['status'] != 'sent' else ''}")
    if "dead" in outcomes:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `alerts` group to the CLI."""
    app.add_typer(alerts_app, name="alerts")
