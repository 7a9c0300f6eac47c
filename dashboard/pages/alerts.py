"""Alerts: the alert engine's rules (create, edit, enable, disable, delete) and the delivery
history, read and written through the engine's own store (``tickcast.alerts.store.AlertStore`` on
``settings.alerts_db_url``, as the API's ``/v1/alerts`` routes do), each rule validated by the
engine's ``RuleSpec``. Recipients are masked everywhere but in the edit form, as the API's
history masks them; who changed what goes to the dashboard's log.

URL state: ``/alerts?rule=NAME`` (the history shown: that rule's alerts only).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlencode

from dashboard.components import fmt_price, fmt_ts
from dashboard.security import current_user
from tickcast.alerts.rules import RuleSpec, mask_address
from tickcast.core.events import PIPELINE_EVENT_KINDS, Severity
from tickcast.core.predictions import Signal

if TYPE_CHECKING:
    import dash
    from pydantic import ValidationError

    from dashboard.data import DashboardData
    from tickcast.alerts.store import AlertStore, StoredRule
    from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.dashboard.alerts")

PATH = "/alerts"
NAME = "Alerts"
TITLE = "Alerts · TickCast"

# Alerts listed in the history, newest first (each with one row per delivery).
HISTORY_LIMIT = 200
# A delivery's last error is cut to this many characters in the table.
ERROR_CHARS = 200
# The history refreshes at the dashboard's rate, but never faster than this (it is a database read).
MIN_REFRESH_SECONDS = 2.0
ANY = "any"
SIGNALS: tuple[str, ...] = get_args(Signal)
SEVERITIES: tuple[str, ...] = get_args(Severity)
CHANNELS = ("sms", "email", "webhook")

# The form's fields: key -> the component holding it (its ``value``).
FORM: dict[str, str] = {
    "name": "alert-name",
    "kind": "alert-kind",
    "signal": "alert-signal",
    "previous_signal": "alert-previous-signal",
    "min_confidence_pct": "alert-min-confidence",
    "min_abs_return_pct": "alert-min-return",
    "band_contains": "alert-band",
    "symbols": "alert-symbols",
    "watchlist": "alert-watchlist",
    "kinds": "alert-pipeline-kinds",
    "min_severity": "alert-min-severity",
    "recipients": "alert-recipients",
    "throttle_seconds": "alert-throttle",
    "quiet_start": "alert-quiet-start",
    "quiet_end": "alert-quiet-end",
    "quiet_timezone": "alert-quiet-tz",
    "severity": "alert-severity",
    "options": "alert-options",
}

# What each RuleSpec field is called on the form (validation messages name the field).
LABELS = {
    "name": "Name", "on_signal": "Signal conditions", "on_pipeline": "Pipeline events", "signal": "Signal",
    "previous_signal": "Previous signal", "min_confidence": "Minimum confidence",
    "min_abs_return": "Minimum |predicted return|", "band_contains": "Price inside the p10–p90 band",
    "kinds": "Event kinds", "min_severity": "Minimum severity", "symbols": "Symbols", "watchlist": "Watchlist",
    "recipients": "Recipients", "throttle_seconds": "Throttle", "quiet_hours": "Quiet hours", "start": "start",
    "end": "end", "timezone": "time zone", "notify_resolved": "Resolved messages", "severity": "Severity",
    "enabled": "Enabled",
}
NAME_RULE = ("letters, digits, spaces, '_', '.' and '-' only, starting with a letter or a digit "
             "(at most 100 characters)")


class RuleFormError(ValueError):
    """The form does not make a valid rule; ``messages`` say why, one per problem, in the form's words."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


# -- form <-> RuleSpec ---------------------------------------------------------------------------


def _default(field: str) -> Any:
    return RuleSpec.model_fields[field].default


def blank_form() -> dict[str, Any]:
    """The form of a new rule: RuleSpec's defaults."""
    return {
        "name": "", "kind": "signal", "signal": ANY, "previous_signal": ANY, "min_confidence_pct": None,
        "min_abs_return_pct": None, "band_contains": None, "symbols": "", "watchlist": None, "kinds": [],
        "min_severity": "warning", "recipients": "", "throttle_seconds": _default("throttle_seconds"),
        "quiet_start": "", "quiet_end": "", "quiet_timezone": "UTC", "severity": _default("severity"),
        "options": ["enabled"] if _default("enabled") else [],
    }


def _as_percent(fraction: float | None) -> float | int | None:
    """0.6 -> 60, exactly as typed (decimal arithmetic: no 60.00000000000001)."""
    if fraction is None:
        return None
    value = Decimal(repr(fraction)) * 100
    return int(value) if value == value.to_integral_value() else float(value)


def spec_to_form(spec: RuleSpec) -> dict[str, Any]:
    """The form's values showing ``spec`` (for editing it)."""
    form = blank_form()
    form.update({
        "name": spec.name, "kind": spec.kind, "symbols": ", ".join(spec.symbols), "watchlist": spec.watchlist,
        "recipients": "\n".join(f"{r.channel} {r.address}" for r in spec.recipients),
        "throttle_seconds": spec.throttle_seconds, "severity": spec.severity,
        "options": [o for o, on in (("notify_resolved", spec.notify_resolved), ("enabled", spec.enabled)) if on],
    })
    if spec.on_signal is not None:
        c = spec.on_signal
        form.update({"signal": c.signal or ANY, "previous_signal": c.previous_signal or ANY,
                     "min_confidence_pct": _as_percent(c.min_confidence),
                     "min_abs_return_pct": _as_percent(c.min_abs_return), "band_contains": c.band_contains})
    if spec.on_pipeline is not None:
        form.update({"kinds": list(spec.on_pipeline.kinds), "min_severity": spec.on_pipeline.min_severity})
    if spec.quiet_hours is not None:
        q = spec.quiet_hours
        form.update({"quiet_start": q.start.strftime("%H:%M" if not q.start.second else "%H:%M:%S"),
                     "quiet_end": q.end.strftime("%H:%M" if not q.end.second else "%H:%M:%S"),
                     "quiet_timezone": q.timezone})
    return form


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _number(value: Any, label: str, errors: list[str], *, percent: bool = False) -> float | None:
    if value is None or _text(value) == "":
        return None
    if isinstance(value, bool):
        errors.append(f"{label}: not a number")
        return None
    try:
        number = Decimal(repr(value) if isinstance(value, float) else _text(value))
    except InvalidOperation:
        errors.append(f"{label}: {value!r} is not a number")
        return None
    if not number.is_finite():
        errors.append(f"{label}: not a number")
        return None
    return float(number / 100) if percent else float(number)


def parse_recipients(text: str | None, errors: list[str]) -> tuple[list[dict[str, str]], list[int]]:
    """One recipient per line, ``channel address`` (the channel may be left out when the address
    says it: +… is sms, …@… email, http(s)://… webhook); the recipients and each one's line number."""
    found: list[dict[str, str]] = []
    lines: list[int] = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if len(words) == 2 and words[0].lower().rstrip(":") in CHANNELS:
            channel, address = words[0].lower().rstrip(":"), words[1]
        elif len(words) == 1:
            address = words[0]
            channel = ("sms" if address.startswith("+") else "webhook" if address.startswith(("http://", "https://"))
                       else "email" if "@" in address else "")
            if not channel:
                errors.append(f"Recipient on line {number}: start the line with its channel (sms, email or "
                              f"webhook), e.g. 'email ana@example.com'")
                continue
        else:
            errors.append(f"Recipient on line {number}: write one recipient per line as 'channel address' "
                          f"(channel: sms, email or webhook)")
            continue
        found.append({"channel": channel, "address": address})
        lines.append(number)
    return found, lines


def form_to_spec(form: dict[str, Any]) -> RuleSpec:
    """The rule the form describes, validated by the engine's own ``RuleSpec``; ``RuleFormError``
    with a message per problem otherwise. Percent fields are percentages (60 means a confidence of 0.6)."""
    from pydantic import ValidationError

    errors: list[str] = []
    options = form.get("options") or []
    data: dict[str, Any] = {
        "name": _text(form.get("name")),
        "severity": form.get("severity") or _default("severity"),
        "notify_resolved": "notify_resolved" in options,
        "enabled": "enabled" in options,
    }
    recipients, lines = parse_recipients(form.get("recipients"), errors)
    data["recipients"] = recipients
    throttle = _number(form.get("throttle_seconds"), "Throttle", errors)
    if throttle is not None:
        data["throttle_seconds"] = int(throttle) if throttle.is_integer() else throttle
    kind = form.get("kind")
    if kind == "signal":
        condition = {
            "signal": None if form.get("signal") in (None, ANY) else form["signal"],
            "previous_signal": None if form.get("previous_signal") in (None, ANY) else form["previous_signal"],
            "min_confidence": _number(form.get("min_confidence_pct"), "Minimum confidence", errors, percent=True),
            "min_abs_return": _number(form.get("min_abs_return_pct"), "Minimum |predicted return|", errors,
                                      percent=True),
            "band_contains": _number(form.get("band_contains"), LABELS["band_contains"], errors),
        }
        confidence = condition["min_confidence"]
        if confidence is not None and not 0 <= confidence <= 1:
            errors.append("Minimum confidence: a percentage from 0 to 100")
        data["on_signal"] = {k: v for k, v in condition.items() if v is not None}
        data["symbols"] = [s for s in _text(form.get("symbols")).replace(",", " ").split() if s]
        if form.get("watchlist"):
            data["watchlist"] = form["watchlist"]
    elif kind == "pipeline":
        data["on_pipeline"] = {"kinds": list(form.get("kinds") or []),
                               "min_severity": form.get("min_severity") or "warning"}
    else:
        errors.append("Triggered by: pick a prediction signal or a pipeline event")
    start, end = _text(form.get("quiet_start")), _text(form.get("quiet_end"))
    if start or end:
        if not (start and end):
            errors.append("Quiet hours: give both a start and an end (HH:MM), or neither")
        else:
            data["quiet_hours"] = {"start": start, "end": end, "timezone": _text(form.get("quiet_timezone")) or "UTC"}
    if errors:
        raise RuleFormError(errors)
    try:
        return RuleSpec.model_validate(data)
    except ValidationError as exc:
        raise RuleFormError(validation_messages(exc, lines)) from None


def validation_messages(exc: ValidationError, recipient_lines: list[int] | None = None) -> list[str]:
    """RuleSpec's validation errors in the form's words: the field's label and what is wrong."""
    messages: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        kind = error["type"]
        if loc == ("name",) and kind in ("string_pattern_mismatch", "string_too_long", "string_too_short"):
            message = NAME_RULE if _text(error.get("input")) else "give the rule a name"
        elif loc == ("recipients",) and kind == "too_short":
            message = "add at least one (one per line, e.g. 'email ana@example.com')"
        elif loc == ("on_pipeline", "kinds") and kind == "too_short":
            message = "pick at least one"
        elif kind in ("int_from_float", "int_parsing"):
            message = "a whole number"
        elif kind == "literal_error":
            message = f"pick one of the choices ({message.removeprefix('Input should be ')})"
        label = _label(loc, recipient_lines or [])
        text = f"{label}: {message}" if label else message[:1].upper() + message[1:]
        if text not in messages:
            messages.append(text)
    return messages


def _label(loc: tuple[Any, ...], recipient_lines: list[int]) -> str:
    if not loc:
        return ""
    head, rest = loc[0], loc[1:]
    if head == "recipients" and rest and isinstance(rest[0], int):
        line = recipient_lines[rest[0]] if rest[0] < len(recipient_lines) else rest[0] + 1
        return f"Recipient on line {line}"
    if head in ("on_signal", "on_pipeline") and rest and isinstance(rest[0], str):
        return LABELS.get(rest[0], rest[0])
    if head == "quiet_hours" and rest and isinstance(rest[0], str):
        return f"Quiet hours {LABELS.get(rest[0], rest[0])}"
    return LABELS.get(str(head), str(head))


# -- what the tables show ------------------------------------------------------------------------


def _percent_text(fraction: float) -> str:
    return f"{_as_percent(fraction)}%"


def describe_trigger(spec: RuleSpec) -> str:
    """What makes the rule hold, in words."""
    if spec.on_pipeline is not None:
        c = spec.on_pipeline
        return f"pipeline event {', '.join(c.kinds)} at {c.min_severity} or above"
    s = spec.on_signal
    assert s is not None  # a RuleSpec has exactly one condition
    parts = []
    if s.signal is not None:
        parts.append(f"signal {s.previous_signal} → {s.signal}" if s.previous_signal else f"signal {s.signal}")
    if s.min_confidence is not None:
        parts.append(f"confidence ≥ {_percent_text(s.min_confidence)}")
    if s.min_abs_return is not None:
        parts.append(f"|predicted return| ≥ {_percent_text(s.min_abs_return)}")
    if s.band_contains is not None:
        parts.append(f"price {fmt_price(s.band_contains)} inside the p10–p90 band")
    return ", ".join(parts)


def describe_scope(spec: RuleSpec) -> str:
    """Which symbols or pipeline parts a rule watches."""
    if spec.kind == "pipeline":
        return "the pipeline"
    if spec.watchlist:
        return f"watchlist {spec.watchlist}"
    if not spec.symbols:
        return "every symbol"
    shown = ", ".join(spec.symbols[:8])
    return shown + (f" and {len(spec.symbols) - 8:,} more" if len(spec.symbols) > 8 else "")


def describe_sending(spec: RuleSpec) -> str:
    parts = [f"throttle {spec.throttle_seconds:,} s"]
    if spec.quiet_hours is not None:
        q = spec.quiet_hours
        parts.append(f"quiet {q.start:%H:%M}–{q.end:%H:%M} {q.timezone}")
    if spec.notify_resolved:
        parts.append("also when resolved")
    return " · ".join(parts)


def describe_recipients(spec: RuleSpec, dry_run_channels: frozenset[str] = frozenset()) -> list[str]:
    """Each recipient as ``channel masked-address``, marked when its channel is a dry run."""
    return [f"{r.channel} {mask_address(r.address)}" + (" (dry run)" if r.channel in dry_run_channels else "")
            for r in spec.recipients]


def rule_rows(rules: list[StoredRule]) -> list[dict[str, Any]]:
    """The rules as the page keeps them between callbacks (JSON)."""
    return [{"id": r.id, "spec": r.spec.model_dump(mode="json"), "updated_at": r.updated_at.isoformat()}
            for r in rules]


def rules_table(rows: list[dict[str, Any]], dry_run_channels: frozenset[str] = frozenset()) -> Any:
    """The rules, each with its toggle, edit and delete buttons (``rows`` from ``rule_rows``)."""
    from dash import html

    if not rows:
        return html.P("No alert rules yet: create one with the form.", className="muted", id="alerts-rules-none")
    body = []
    for row in rows:
        spec = RuleSpec.model_validate(row["spec"])
        rule_id = row["id"]
        body.append(html.Tr([
            html.Td(spec.name, className="rule-name"),
            html.Td(describe_trigger(spec)),
            html.Td(describe_scope(spec)),
            html.Td([html.Div(text) for text in describe_recipients(spec, dry_run_channels)]),
            html.Td(describe_sending(spec)),
            html.Td(spec.severity),
            html.Td([
                html.Span("on" if spec.enabled else "off", className="rule-enabled",
                          style={"fontWeight": 600, "color": "#1a7f37" if spec.enabled else "#8c959f",
                                 "marginRight": "6px"}),
                html.Button("Disable" if spec.enabled else "Enable", n_clicks=0, className="rule-toggle",
                            id={"type": "alert-toggle", "rule": rule_id, "to": "off" if spec.enabled else "on"}),
            ]),
            html.Td([
                html.Button("Edit", n_clicks=0, className="rule-edit", id={"type": "alert-edit", "rule": rule_id}),
                " ",
                html.Button("Delete", n_clicks=0, className="rule-delete",
                            id={"type": "alert-delete", "rule": rule_id}),
            ]),
        ], id=f"alert-rule-{rule_id}", **{"data-rule": spec.name}))
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("Name", "Triggers on", "Watches", "Recipients", "Sending",
                                                 "Severity", "Enabled", "")])),
        html.Tbody(body),
    ], className="simple", id="alerts-rules-table")


def history_rows(alerts: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per delivery of each alert (``AlertStore.history``, newest first), recipients
    masked; an alert with no delivery (throttled) is one row of its own status."""
    rows = []
    for alert in alerts:
        base = {"when": fmt_ts(alert["created_at"]), "rule": alert["rule"], "subject": alert["subject"],
                "phase": alert["phase"]}
        if not alert["deliveries"]:
            rows.append({**base, "channel": "–", "recipient": "–", "status": alert["status"], "attempts": "–",
                         "error": ""})
        for d in alert["deliveries"]:
            error = d.get("last_error") or ""
            rows.append({
                **base, "channel": d["channel"], "recipient": mask_address(d["address"]),
                "status": d["status"] + (" (dry run)" if d.get("dry_run") else ""),
                "attempts": f"{d['attempts']:,}",
                "error": error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 1] + "…",
            })
    return rows


HISTORY_COLUMNS = (("when", "When (UTC)"), ("rule", "Rule"), ("subject", "Symbol / subject"), ("phase", "Phase"),
                   ("channel", "Channel"), ("recipient", "Recipient"), ("status", "Status"),
                   ("attempts", "Attempts"), ("error", "Error"))


def history_table(rows: list[dict[str, str]], rule: str | None = None) -> Any:
    from dash import html

    if not rows:
        text = f"No alerts for rule {rule!r} yet." if rule else "No alerts yet."
        return html.P(text, className="muted", id="alerts-history-none")
    return html.Table([
        html.Thead(html.Tr([html.Th(title) for _, title in HISTORY_COLUMNS])),
        html.Tbody([html.Tr([html.Td(row[key], className=f"history-{key}") for key, _ in HISTORY_COLUMNS])
                    for row in rows]),
    ], className="simple", id="alerts-history-table")


# -- the engine's store --------------------------------------------------------------------------


class AlertService:
    """The alert engine's store, opened (and migrated) at the page's first use, as the API opens
    it: a dashboard whose alerts page is never shown never touches the alert database."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._store: AlertStore | None = None
        self._dry_run: frozenset[str] | None = None
        self._lock = threading.Lock()

    def store(self) -> AlertStore:
        with self._lock:
            if self._store is None:
                from tickcast.alerts.store import AlertStore

                self._store = AlertStore(self.settings.alerts_db_url)
            return self._store

    def dry_run_channels(self) -> frozenset[str]:
        """The channels the engine runs as dry runs with these settings (no credentials)."""
        with self._lock:
            if self._dry_run is None:
                from tickcast.alerts.channels import channels_from_settings

                self._dry_run = frozenset(n for n, c in channels_from_settings(self.settings).items() if c.dry_run)
            return self._dry_run

    def rules_view(self) -> dict[str, Any]:
        store = self.store()
        rules = store.rules()
        # A rule may name a watchlist the engine does not have (yet): it stays a choice, so editing
        # the rule keeps it.
        watchlists = set(store.watchlists()) | {r.spec.watchlist for r in rules if r.spec.watchlist}
        return {"rules": rule_rows(rules), "watchlists": sorted(watchlists), "dry_run": sorted(self.dry_run_channels())}

    def history(self, rule: str | None) -> list[dict[str, str]]:
        return history_rows(self.store().history(limit=HISTORY_LIMIT, rule=rule or None))


# -- the page ------------------------------------------------------------------------------------


def _field(label: str, control: Any, note: str | None = None) -> Any:
    from dash import html

    return html.Div([html.Label(label, style={"display": "block", "fontSize": "13px", "marginTop": "8px"}),
                     control, html.Div(note, className="muted") if note else None])


def _radio(component_id: str, choices: list[tuple[str, str]], value: str) -> Any:
    from dash import dcc

    return dcc.RadioItems(id=component_id, value=value, inline=True, inputStyle={"marginRight": "3px"},
                          labelStyle={"marginRight": "10px"},
                          options=[{"label": label, "value": v} for v, label in choices])


def rule_form() -> Any:
    from dash import dcc, html

    form = blank_form()
    wide = {"width": "100%", "boxSizing": "border-box"}
    signal_choices = [(ANY, "any"), *((s, s) for s in SIGNALS)]
    return html.Div([
        html.H4("New rule", id="alert-form-title", style={"margin": "4px 0"}),
        _field("Name", dcc.Input(id="alert-name", type="text", value=form["name"], maxLength=100, style=wide,
                                 placeholder="e.g. confident-buys")),
        _field("Triggered by", _radio("alert-kind", [("signal", "a prediction"), ("pipeline", "a pipeline event")],
                                      form["kind"])),
        html.Div(id="alert-signal-fields", children=[
            _field("Signal", _radio("alert-signal", signal_choices, form["signal"])),
            _field("… changed from", _radio("alert-previous-signal", signal_choices, form["previous_signal"])),
            _field("Minimum confidence (%)", dcc.Input(id="alert-min-confidence", type="number", min=0, max=100,
                                                       step="any", value=form["min_confidence_pct"], style=wide)),
            _field("Minimum |predicted return| (%)", dcc.Input(id="alert-min-return", type="number", min=0,
                                                               step="any", value=form["min_abs_return_pct"],
                                                               style=wide)),
            _field("Price inside the p10–p90 band (price)", dcc.Input(id="alert-band", type="number", min=0,
                                                                     step="any", value=form["band_contains"],
                                                                     style=wide)),
            _field("Symbols", dcc.Input(id="alert-symbols", type="text", value=form["symbols"], style=wide,
                                        placeholder="AAPL, MSFT"), "empty: every symbol (or a watchlist)"),
            _field("Watchlist", dcc.Dropdown(id="alert-watchlist", options=[], value=form["watchlist"],
                                             placeholder="none (the alert engine's watchlists)")),
        ]),
        html.Div(id="alert-pipeline-fields", style={"display": "none"}, children=[
            _field("Event kinds", dcc.Checklist(id="alert-pipeline-kinds", value=form["kinds"],
                                                options=[{"label": k, "value": k} for k in PIPELINE_EVENT_KINDS],
                                                inputStyle={"marginRight": "4px"})),
            _field("Minimum severity", _radio("alert-min-severity", [(s, s) for s in SEVERITIES],
                                              form["min_severity"])),
        ]),
        _field("Recipients", dcc.Textarea(id="alert-recipients", value=form["recipients"],
                                          style={**wide, "height": "70px"},
                                          placeholder="sms +15551234567\nemail ana@example.com\n"
                                                      "webhook https://example.com/hook"),
               "one per line: channel (sms, email, webhook) and address"),
        html.Div(id="alert-dry-run-note", className="muted"),
        _field("Throttle (s)", dcc.Input(id="alert-throttle", type="number", min=0, step=1,
                                         value=form["throttle_seconds"], style=wide),
               "further incidents of a symbol within this many seconds are recorded, not sent"),
        _field("Quiet hours (HH:MM, start – end, time zone)", html.Div([
            dcc.Input(id="alert-quiet-start", type="text", value=form["quiet_start"], placeholder="22:00",
                      style={"width": "70px"}),
            " – ",
            dcc.Input(id="alert-quiet-end", type="text", value=form["quiet_end"], placeholder="07:00",
                      style={"width": "70px"}),
            " ",
            dcc.Input(id="alert-quiet-tz", type="text", value=form["quiet_timezone"], placeholder="UTC",
                      style={"width": "150px"}),
        ]), "messages wait until the quiet hours end; empty: none"),
        _field("Severity", _radio("alert-severity", [(s, s) for s in SEVERITIES], form["severity"])),
        dcc.Checklist(id="alert-options", value=form["options"], style={"marginTop": "8px"},
                      inputStyle={"marginRight": "4px"},
                      options=[{"label": "also send when it stops holding", "value": "notify_resolved"},
                               {"label": "enabled", "value": "enabled"}]),
        html.Div([
            html.Button("Save rule", id="alert-save", n_clicks=0),
            html.Button("New rule", id="alert-new", n_clicks=0),
        ], className="controls"),
        html.Ul(id="alert-form-errors", style={"color": "#cf222e", "fontSize": "14px", "paddingLeft": "18px"}),
    ], className="card", id="alert-form", style={"flex": "0 1 400px"})


def layout(data: DashboardData, rule: str | None = None, **_: Any) -> Any:
    from dash import dcc, html

    refresh = max(data.settings.dashboard_refresh_seconds, MIN_REFRESH_SECONDS)
    return html.Div([
        dcc.Location(id="alerts-url", refresh=False),
        dcc.Store(id="alerts-changed"),
        dcc.Store(id="alerts-rules-data"),
        dcc.Store(id="alerts-editing"),
        dcc.Store(id="alerts-pending-delete"),
        dcc.ConfirmDialog(id="alerts-confirm-delete"),
        dcc.Interval(id="alerts-refresh", interval=int(refresh * 1000)),
        html.Div([html.Span(id="alerts-status", className="muted")], className="controls"),
        html.Div([
            html.Div([html.H4("Rules", style={"margin": "6px 0"}), html.Div(id="alerts-rules")],
                     style={"flex": "1 1 640px", "minWidth": "0", "overflowX": "auto"}),
            rule_form(),
        ], className="main"),
        html.Div([
            html.H4("Delivery history (newest first)"),
            html.Div([
                dcc.Dropdown(id="alerts-history-rule", value=rule or None, placeholder="every rule",
                             options=[rule] if rule else [], style={"width": "260px"}),
            ], className="controls"),
            html.Div(id="alerts-history", style={"overflowX": "auto"}),
        ], className="section"),
    ])


def _changed() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S UTC")


def summary(spec: RuleSpec) -> str:
    """A rule in one line for the log, its recipients masked (the log is no place for them)."""
    return (f"{'enabled' if spec.enabled else 'disabled'}; {describe_trigger(spec)}; on {describe_scope(spec)}; "
            f"to {', '.join(describe_recipients(spec))}; {describe_sending(spec)}; severity {spec.severity}")


def _form_outputs(form: dict[str, Any]) -> dict[str, Any]:
    return {key: form[key] for key in FORM}


def register(app: dash.Dash, data: DashboardData) -> None:
    from dash import ALL, Input, Output, State, ctx, html, no_update

    from tickcast.core.errors import Conflict, NotFound

    service = AlertService(data.settings)
    form_state = {key: State(component, "value") for key, component in FORM.items()}

    def form_output(duplicate: bool = True) -> dict[str, Output]:
        return {key: Output(component, "value", allow_duplicate=duplicate) for key, component in FORM.items()}

    def clicked() -> bool:
        # Buttons drawn anew (the table re-rendered) report n_clicks 0: only a real click counts.
        return bool(ctx.triggered and ctx.triggered[0].get("value"))

    @app.callback(
        Output("alerts-rules", "children"),
        Output("alerts-rules-data", "data"),
        Output("alert-watchlist", "options"),
        Output("alert-dry-run-note", "children"),
        Output("alerts-history-rule", "options"),
        Input("alerts-refresh", "n_intervals"),
        Input("alerts-changed", "data"),
        State("alerts-rules-data", "data"),
        State("alerts-history-rule", "value"),
    )
    async def load_rules(_n: int | None, _changed_token: str | None, shown: dict | None, history_rule: str | None):
        try:
            view = await asyncio.to_thread(service.rules_view)
        except Exception as exc:  # noqa: BLE001 - shown to the analyst; the next refresh tries again
            log.exception("reading the alert rules failed")
            message = html.P(f"Cannot read the alert store right now ({type(exc).__name__}); retrying.",
                             className="muted", id="alerts-rules-error")
            return message, None, no_update, no_update, no_update
        if view == shown:  # unchanged: leave the buttons alone under the analyst's pointer
            return no_update, no_update, no_update, no_update, no_update
        dry = frozenset(view["dry_run"])
        note = (f"Dry run now (no credentials set): {', '.join(view['dry_run'])}: messages are logged and "
                f"recorded as sent." if dry else "")
        names = [r["spec"]["name"] for r in view["rules"]]
        if history_rule and history_rule not in names:
            names.append(history_rule)  # a deleted rule's alerts stay in the history
        return rules_table(view["rules"], dry), view, view["watchlists"], note, names

    @app.callback(
        Output("alerts-history", "children"),
        Input("alerts-refresh", "n_intervals"),
        Input("alerts-history-rule", "value"),
        Input("alerts-changed", "data"),
    )
    async def load_history(_n: int | None, rule: str | None, _changed_token: str | None):
        try:
            rows = await asyncio.to_thread(service.history, rule)
        except Exception as exc:  # noqa: BLE001 - shown to the analyst; the next refresh tries again
            log.exception("reading the alert history failed")
            return html.P(f"Cannot read the alert history right now ({type(exc).__name__}); retrying.",
                          className="muted", id="alerts-history-error")
        return history_table(rows, rule)

    @app.callback(
        Output("alerts-url", "search"),
        Input("alerts-history-rule", "value"),
        prevent_initial_call=True,
    )
    def keep_filter_in_url(rule: str | None):
        return f"?{urlencode({'rule': rule})}" if rule else ""

    @app.callback(
        Output("alert-signal-fields", "style"),
        Output("alert-pipeline-fields", "style"),
        Input("alert-kind", "value"),
    )
    def show_kind_fields(kind: str | None):
        shown, hidden = {"display": "block"}, {"display": "none"}
        return (shown, hidden) if kind != "pipeline" else (hidden, shown)

    @app.callback(
        output={"form": form_output(), "editing": Output("alerts-editing", "data", allow_duplicate=True),
                "title": Output("alert-form-title", "children", allow_duplicate=True),
                "errors": Output("alert-form-errors", "children", allow_duplicate=True),
                "status": Output("alerts-status", "children", allow_duplicate=True),
                "changed": Output("alerts-changed", "data", allow_duplicate=True)},
        inputs={"_save": Input("alert-save", "n_clicks")},
        state={"form": form_state, "editing": State("alerts-editing", "data")},
        prevent_initial_call=True,
    )
    async def save(_save: int, form: dict[str, Any], editing: dict | None):
        keep = {"form": {key: no_update for key in FORM}, "editing": no_update, "title": no_update,
                "status": no_update, "changed": no_update}
        user = current_user.get()
        if not user:
            return {**keep, "errors": [html.Li("Sign in again to change alert rules.")]}
        try:
            spec = form_to_spec(form)
        except RuleFormError as exc:
            return {**keep, "errors": [html.Li(m) for m in exc.messages]}
        store = service.store
        try:
            if editing:
                stored = await asyncio.to_thread(lambda: store().replace_rule(editing["id"], spec))
                log.info("%s changed alert rule %r (id %d, was %r): %s", user, stored.name, stored.id,
                         editing.get("name"), summary(spec))
                status = f"Saved rule {stored.name!r}."
            else:
                stored = await asyncio.to_thread(lambda: store().add_rule(spec))
                log.info("%s created alert rule %r (id %d): %s", user, stored.name, stored.id, summary(spec))
                status = f"Created rule {stored.name!r}."
        except (Conflict, NotFound) as exc:
            message = str(exc) if isinstance(exc, Conflict) else f"{exc}: it was deleted meanwhile"
            return {**keep, "errors": [html.Li(message[:1].upper() + message[1:])]}
        except Exception as exc:  # noqa: BLE001 - shown to the analyst, the form kept as it was
            log.exception("saving alert rule %r failed", spec.name)
            return {**keep, "errors": [html.Li(f"Cannot save the rule right now ({type(exc).__name__}).")]}
        return {"form": _form_outputs(blank_form()), "editing": None, "title": "New rule", "errors": [],
                "status": f"{status} ({_now()})", "changed": _changed()}

    @app.callback(
        output={"form": form_output(), "editing": Output("alerts-editing", "data", allow_duplicate=True),
                "title": Output("alert-form-title", "children", allow_duplicate=True),
                "errors": Output("alert-form-errors", "children", allow_duplicate=True)},
        inputs={"_edit": Input({"type": "alert-edit", "rule": ALL}, "n_clicks"),
                "_new": Input("alert-new", "n_clicks")},
        prevent_initial_call=True,
    )
    async def open_form(_edit: list[int], _new: int):
        if not clicked():
            return {"form": {key: no_update for key in FORM}, "editing": no_update, "title": no_update,
                    "errors": no_update}
        if ctx.triggered_id == "alert-new":
            return {"form": _form_outputs(blank_form()), "editing": None, "title": "New rule", "errors": []}
        rule_id = ctx.triggered_id["rule"]
        try:
            stored = await asyncio.to_thread(lambda: service.store().rule(rule_id))
        except NotFound:
            return {"form": {key: no_update for key in FORM}, "editing": no_update, "title": no_update,
                    "errors": [html.Li("That rule was deleted meanwhile.")]}
        return {"form": _form_outputs(spec_to_form(stored.spec)), "editing": {"id": stored.id, "name": stored.name},
                "title": f"Edit rule {stored.name!r}", "errors": []}

    @app.callback(
        Output("alerts-status", "children", allow_duplicate=True),
        Output("alerts-changed", "data", allow_duplicate=True),
        Input({"type": "alert-toggle", "rule": ALL, "to": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    async def toggle(_clicks: list[int]):
        if not clicked():
            return no_update, no_update
        user = current_user.get()
        if not user:
            return "Sign in again to change alert rules.", no_update
        rule_id, enable = ctx.triggered_id["rule"], ctx.triggered_id["to"] == "on"
        try:
            stored = await asyncio.to_thread(lambda: service.store().set_enabled(rule_id, enable))
        except NotFound:
            return "That rule was deleted meanwhile.", _changed()
        except Exception as exc:  # noqa: BLE001 - shown to the analyst
            log.exception("switching alert rule %s failed", rule_id)
            return f"Cannot change the rule right now ({type(exc).__name__}).", no_update
        log.info("%s %s alert rule %r (id %d)", user, "enabled" if enable else "disabled", stored.name, stored.id)
        return (f"{'Enabled' if enable else 'Disabled'} rule {stored.name!r} ({_now()}).",
                _changed())

    @app.callback(
        Output("alerts-confirm-delete", "displayed"),
        Output("alerts-confirm-delete", "message"),
        Output("alerts-pending-delete", "data"),
        Input({"type": "alert-delete", "rule": ALL}, "n_clicks"),
        State("alerts-rules-data", "data"),
        prevent_initial_call=True,
    )
    def ask_delete(_clicks: list[int], shown: dict | None):
        if not clicked():
            return no_update, no_update, no_update
        rule_id = ctx.triggered_id["rule"]
        names = {r["id"]: r["spec"]["name"] for r in (shown or {}).get("rules", [])}
        name = names.get(rule_id, f"#{rule_id}")
        return (True, f"Delete the alert rule {name!r}? Its alerts stay in the history.",
                {"id": rule_id, "name": name})

    @app.callback(
        output={"status": Output("alerts-status", "children", allow_duplicate=True),
                "changed": Output("alerts-changed", "data", allow_duplicate=True),
                "form": form_output(), "editing": Output("alerts-editing", "data", allow_duplicate=True),
                "title": Output("alert-form-title", "children", allow_duplicate=True)},
        inputs={"_confirmed": Input("alerts-confirm-delete", "submit_n_clicks")},
        state={"pending": State("alerts-pending-delete", "data"), "editing": State("alerts-editing", "data")},
        prevent_initial_call=True,
    )
    async def delete(_confirmed: int, pending: dict | None, editing: dict | None):
        untouched = {"form": {key: no_update for key in FORM}, "editing": no_update, "title": no_update}
        user = current_user.get()
        if not pending:
            return {**untouched, "status": no_update, "changed": no_update}
        if not user:
            return {**untouched, "status": "Sign in again to change alert rules.", "changed": no_update}
        try:
            stored = await asyncio.to_thread(lambda: service.store().delete_rule(pending["id"]))
        except NotFound:
            return {**untouched, "status": "That rule was deleted already.", "changed": _changed()}
        except Exception as exc:  # noqa: BLE001 - shown to the analyst
            log.exception("deleting alert rule %s failed", pending)
            return {**untouched, "status": f"Cannot delete the rule right now ({type(exc).__name__}).",
                    "changed": no_update}
        log.info("%s deleted alert rule %r (id %d): %s", user, stored.name, stored.id, summary(stored.spec))
        status = f"Deleted rule {stored.name!r} ({_now()})."
        if editing and editing.get("id") == stored.id:
            return {"form": _form_outputs(blank_form()), "editing": None, "title": "New rule", "status": status,
                    "changed": _changed()}
        return {**untouched, "status": status, "changed": _changed()}
