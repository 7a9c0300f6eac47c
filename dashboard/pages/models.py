"""Model health: the champion and challenger of each architecture with their walk-forward
metrics and promotion decisions (the MLflow registry, as ``GET /v1/models`` lists it), every
version's verdict, what serves now, the monitor's newest checks (realised performance against
the predecessor and the momentum baseline, confidence, the rollback rule, drift of each input:
the Delta ``model_monitoring`` table, as ``GET /v1/models/monitoring``), and the calibration of
the champion's served probabilities (``tickcast.models.calibration``).

URL state: ``/models?interval=1d|1m``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from dashboard.components import fmt_pct, fmt_ts, is_baseline
from tickcast.core.errors import ServiceError
from tickcast.core.intervals import INTERVAL_NAMES, horizon_interval
from tickcast.models.registry import pair_label

if TYPE_CHECKING:
    import dash
    import plotly.graph_objects as go

    from dashboard.data import DashboardData
    from tickcast.core.settings import Settings
    from tickcast.models.calibration import Calibration
    from tickcast.models.listing import RegisteredModel, VersionInfo
    from tickcast.models.promotions import DecisionRecord
    from tickcast.scoring.models import ModelLoader

log = logging.getLogger("tickcast.dashboard.models")

PATH = "/models"
NAME = "Models"
TITLE = "Models · TickCast"
CALIBRATION_ID = "models-calibration"
# MLflow's client retries an unreachable server for minutes; the page says so sooner.
REGISTRY_TIMEOUT_SECONDS = 20.0
# The registry and the monitor change hourly at most.
REFRESH_MS = 60_000
MESSAGE_CHARS = 400
# On an empty calibration plot; the note under it says why.
EMPTY_PLOT = "Nothing to measure yet (see below)"
# Errors and a rollback stand out (the stylesheet has no class for them).
ALARM = {"color": "#cf222e", "fontWeight": 600}


def _number(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}"


def _percent(v: float) -> str:
    return f"{v * 100:.1f}%"


# The walk-forward metrics a version carries (``metric.<name>`` tags, from its metrics.json):
# label with its unit, and format. Returns are fractions, shown as percentages.
METRICS: dict[str, tuple[str, Callable[[float], str]]] = {
    "rows": ("Test rows (count)", lambda v: f"{v:,.0f}"),
    "ic": ("IC (Pearson ρ of p50 and the forward return)", _number(4)),
    "rank_ic": ("Rank IC (Spearman ρ)", _number(4)),
    "accuracy": ("Accuracy (% of classes right)", _percent),
    "macro_f1": ("Macro F1 (0–1)", _number(3)),
    "f1_up": ("F1 of UP (0–1)", _number(3)),
    "f1_down": ("F1 of DOWN (0–1)", _number(3)),
    "brier": ("Brier score (0–2, lower is better)", _number(4)),
    "mae": ("MAE of p50 (return, %)", lambda v: f"{v * 100:.2f}%"),
    "coverage": ("p10–p90 coverage (% of returns inside)", _percent),
    "annual_return": ("Annual return after costs (%)", fmt_pct),
    "sharpe": ("Sharpe ratio (annualised)", _number(2)),
    "max_drawdown": ("Max drawdown (%)", fmt_pct),
    "turnover": ("Turnover (position change per bar)", _number(3)),
}


def metric_rows(*figures: dict[str, float]) -> list[tuple[str, list[str]]]:
    """(label, one formatted cell per version) for every metric any of them has: the known ones
    in ``METRICS`` order, then the others by name."""
    names = [n for n in METRICS if any(n in f for f in figures)]
    names += sorted({n for f in figures for n in f} - set(METRICS))
    rows = []
    for name in names:
        label, fmt = METRICS.get(name, (name, lambda v: f"{v:,.4g}"))
        rows.append((label, [fmt(f[name]) if name in f and math.isfinite(f[name]) else "–" for f in figures]))
    return rows


def view(interval: str | None, default: str) -> dict[str, str]:
    """The page's state from the URL; an unknown interval falls back to the scorer's."""
    return {"interval": interval if interval in INTERVAL_NAMES else default}


# -- what the page reads ---------------------------------------------------------------------


@dataclass
class Snapshot:
    """Everything the page shows for one interval; each part carries its own error (one store
    being down leaves the others on the page)."""

    interval: str
    models: list[RegisteredModel] | None = None
    decisions: list[DecisionRecord] | None = None
    registry_error: str | None = None
    checks: list[dict[str, Any]] | None = None
    monitoring_error: str | None = None
    calibration: Calibration | None = None
    calibration_note: str = ""
    serving: list[tuple[str, str, int]] = field(default_factory=list)  # (model, version, symbols)
    serving_error: str | None = None


def message(what: str, exc: BaseException, waited_for: str = "the model registry (MLflow)") -> str:
    """An error as the analyst reads it: what could not be done and why, never a traceback."""
    if isinstance(exc, TimeoutError):
        return f"{what}: {waited_for} did not answer within {REGISTRY_TIMEOUT_SECONDS:.0f} s"
    text = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
    if len(text) > MESSAGE_CHARS:
        # A client's error names the request first and the cause (refused, timed out) last.
        text = f"{text[:MESSAGE_CHARS * 2 // 3]} … {text[-MESSAGE_CHARS // 3:]}"
    if text.lower().startswith(what.lower()):
        return text[0].upper() + text[1:]
    return f"{what}: {text}"


def read_registry(loader: ModelLoader, interval: str) -> tuple[list[RegisteredModel], list[DecisionRecord]]:
    from tickcast.models.listing import registered_models
    from tickcast.models.promotions import promotion_history

    # The history first: ModelLoader.aliases takes any MLflow error for "no such alias", so an
    # unreachable server would read as an empty registry; the history raises Unavailable instead.
    decisions = promotion_history(loader.client(), interval)
    return registered_models(loader, interval), decisions


def champion_pair(models: list[RegisteredModel]) -> tuple[str, str, VersionInfo] | None:
    """(model name, version, the LSTM champion) as the champion pair's predictions are labelled
    (``registry.pair_label``), or None unless every architecture has a champion."""
    if not models or any(m.champion is None for m in models):
        return None
    champions = [m.champion for m in models if m.champion is not None]
    return (pair_label(*(m.name for m in models)), pair_label(*(c.version for c in champions)), champions[0])


def read_calibration(settings: Settings, loader: ModelLoader, interval: str,
                     models: list[RegisteredModel]) -> tuple[Calibration | None, str]:
    """The champion pair's calibration, or None and why not."""
    from tickcast.models import calibration

    found = champion_pair(models)
    if found is None:
        return None, (f"No champion pair for {interval} bars: calibration is measured on the champion's served "
                      "predictions (the momentum baseline's probabilities are not a trained model's).")
    model_name, model_version, lstm = found
    spec = calibration.run_spec(loader.client(), lstm.run_id)
    if spec is None:
        return None, (f"The training run of {model_name} v{model_version} (run {lstm.run_id}) recorded no label "
                      "rule (labels.k, labels.horizon, labels.vol_window): its outcomes cannot be labelled.")
    since = datetime.now(UTC) - calibration.window(settings, interval)
    measured = calibration.measure(settings, interval, model_name, model_version, spec, since)
    return measured, calibration_note(measured)


def calibration_note(c: Calibration) -> str:
    rule = (f"triple barrier at k = {c.spec.k:g} standard deviations, horizon {c.spec.horizon} bar(s), "
            f"volatility over {c.spec.vol_window} bars")
    if not c.predictions:
        return f"No predictions of {c.model_name} v{c.model_version} stored since {fmt_ts(c.since)}."
    if not c.outcomes:
        return (f"{c.predictions:,} predictions of {c.model_name} v{c.model_version} since {fmt_ts(c.since)}, none "
                f"whose outcome is known yet ({rule}).")
    return (f"{c.model_name} v{c.model_version}: {c.outcomes:,} outcomes (symbol × bar, from {c.predictions:,} "
            f"predictions) since {fmt_ts(c.since)}; each bar's class by the rule it was trained with: {rule}. "
            "Bins of 10 percentage points; the dotted diagonal is a perfectly calibrated model.")


def serving_now(payloads: list[dict[str, Any]], interval: str) -> list[tuple[str, str, int]]:
    """(model, version, symbols) of the live predictions made on bars of ``interval``, most
    symbols first."""
    counts: Counter[tuple[str, str]] = Counter()
    for p in payloads:
        try:
            if horizon_interval(p["horizon"]).name != interval:
                continue
        except (KeyError, ValueError):
            continue
        counts[(p["model_name"], str(p["model_version"]))] += 1
    return [(name, version, n) for (name, version), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


async def gather(data: Any, loader: ModelLoader, interval: str) -> Snapshot:
    """Read every part at once, each in a worker thread; the registry's reads give up after
    ``REGISTRY_TIMEOUT_SECONDS``."""
    from tickcast.models.watch import latest_checks

    snap = Snapshot(interval)
    registry, checks, payloads = await asyncio.gather(
        asyncio.wait_for(asyncio.to_thread(read_registry, loader, interval), REGISTRY_TIMEOUT_SECONDS),
        asyncio.to_thread(latest_checks, data.settings, interval),
        data.latest_payloads(),
        return_exceptions=True,
    )
    if isinstance(registry, BaseException):
        log.warning("reading the model registry for %s failed: %s", interval, registry)
        snap.registry_error = message("The model registry cannot be read", registry)
        snap.calibration_note = "Calibration needs the champion from the registry, which cannot be read now."
    else:
        snap.models, snap.decisions = registry
    if isinstance(checks, BaseException):
        log.warning("reading the monitoring table for %s failed: %s", interval, checks)
        snap.monitoring_error = message("The monitor's checks cannot be read", checks)
    else:
        snap.checks = checks
    if isinstance(payloads, BaseException):
        snap.serving_error = message("The live predictions cannot be read", payloads)
    else:
        snap.serving = serving_now(payloads, interval)
    if snap.models is not None:
        try:
            snap.calibration, snap.calibration_note = await asyncio.wait_for(
                asyncio.to_thread(read_calibration, data.settings, loader, interval, snap.models),
                REGISTRY_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - shown to the analyst beside the rest of the page
            log.warning("measuring calibration for %s failed: %s", interval, exc)
            snap.calibration_note = message("Calibration cannot be measured now", exc,
                                            "the registry or the predictions table")
    return snap


# -- what the page draws ---------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]], id: str | None = None) -> Any:  # noqa: A002
    from dash import html

    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])),
                       html.Tbody([html.Tr([html.Td(c) for c in row]) for row in rows])],
                      className="simple", **({"id": id} if id else {}))


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "–"


def serving_line(snap: Snapshot) -> Any:
    from dash import html

    if snap.serving_error:
        return html.P(snap.serving_error, className="muted", id="models-serving")
    if not snap.serving:
        return html.P(f"No live {snap.interval} predictions right now.", className="muted", id="models-serving")
    parts = [f"{name} v{version} ({n:,} symbol{'s' if n != 1 else ''})"
             + (" - the momentum baseline, served until a champion pair exists" if is_baseline(name) else "")
             for name, version, n in snap.serving]
    return html.P(f"Serving {snap.interval} predictions now: " + "; ".join(parts), id="models-serving")


def version_table(model: RegisteredModel) -> Any:
    """Champion beside challenger: registration, decision and walk-forward metrics."""
    from dash import html

    champion, challenger = model.champion, model.challenger
    if champion is None and challenger is None:
        return html.P("No version registered yet.", className="muted")
    same = champion is not None and challenger is not None and champion.version == challenger.version
    shown = [v for v in (champion, None if same else challenger) if v is not None]
    header = ["", *(f"{v.alias.capitalize()} v{v.version}" for v in shown)]
    rows = [
        ["Registered", *(_when(v.created_at) for v in shown)],
        ["Promotion decision", *(v.promotion_decision or "not put to the gate yet" for v in shown)],
        *([label, *cells] for label, cells in metric_rows(*(v.metrics for v in shown))),
    ]
    notes = []
    if same and champion is not None:
        notes.append(html.P(f"The challenger is the champion (v{champion.version}): no newer version waits.",
                            className="muted"))
    elif champion is None:
        notes.append(html.P("No champion yet: this architecture has never passed the promotion gate.",
                            className="muted"))
    elif challenger is None:
        notes.append(html.P("No challenger.", className="muted"))
    return html.Div([*notes, _table(header, rows, id=f"models-versions-{model.architecture}")])


def registry_section(snap: Snapshot) -> list[Any]:
    from dash import html

    out = [serving_line(snap)]
    if snap.registry_error:
        return [*out, html.P(snap.registry_error, style=ALARM, id="models-registry-error")]
    models = snap.models or []
    if all(m.champion is None and m.challenger is None for m in models):
        return [*out, html.P(
            f"No model is registered for {snap.interval} bars yet: the momentum baseline serves every "
            f"{snap.interval} prediction. `tickcast train` (or the retrain DAG) registers a challenger of each "
            "architecture; one that beats the champion and every baseline on the same walk-forward folds is "
            "promoted to champion, and the pair then serves.", id="models-empty")]
    if champion_pair(models) is None:
        out.append(html.P(f"No champion pair for {snap.interval} bars yet: the momentum baseline serves until "
                          "every architecture has a champion.", className="muted", id="models-no-pair"))
    for m in models:
        out.append(html.Div([html.H4(f"{m.architecture.upper()} · {m.name}"), version_table(m)],
                            className="section"))
    return out


def _now_cell(r: DecisionRecord) -> str:
    if r.aliases:
        return ", ".join(r.aliases)
    return "past champion" if r.was_champion else "–"


def decisions_section(snap: Snapshot) -> Any:
    from dash import html

    if snap.registry_error:
        return html.P("The promotion decisions are in the registry, which cannot be read now.", className="muted")
    if not snap.decisions:
        return html.P(f"No promotion decision for {snap.interval} yet.", className="muted", id="models-decisions-none")
    rows = [[r.name, f"v{r.version}", _when(r.created_at), _now_cell(r), r.verdict or "not put to the gate yet",
             "; ".join(r.reasons) or "–"] for r in snap.decisions]
    return _table(["Model", "Version", "Registered", "Now", "Verdict", "Reasons"], rows, id="models-decisions-table")


def _ic(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _count(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def monitoring_section(snap: Snapshot) -> list[Any]:
    """The monitor's newest run: realised IC and hit rate against the predecessor and the
    baseline, mean confidence, the rollback rule, drift of each input."""
    from dash import html

    if snap.monitoring_error:
        return [html.P(snap.monitoring_error, style=ALARM, id="models-monitoring-error")]
    checks = snap.checks or []
    if not checks:
        return [html.P(f"The monitor has not checked a {snap.interval} champion yet: it runs hourly (the monitor DAG) "
                       "once a champion pair serves.", className="muted", id="models-monitoring-none")]
    first = checks[0]
    checked = first["checked_at"]
    checked = checked.to_pydatetime() if hasattr(checked, "to_pydatetime") else checked
    out: list[Any] = [html.P(f"Newest monitor run {first['run_key']}, checked {fmt_ts(checked)}, of "
                             f"{first['model_name']} v{first['model_version']}.", id="models-monitor-run")]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        by_kind.setdefault(c["kind"], []).append(c)

    realised: dict[str, dict[str, dict[str, Any]]] = {}
    for c in by_kind.get("realised", []):
        realised.setdefault(c["subject"], {})[c["metric"]] = c
    order = sorted(realised, key=lambda s: (s != "champion", s.startswith("momentum"), s))
    rows = [[s, _ic(realised[s].get("ic", {}).get("value")), _pct(realised[s].get("hit_rate", {}).get("value")),
             _count((realised[s].get("ic") or realised[s].get("hit_rate") or {}).get("observations"))] for s in order]
    out += [html.H4("Realised performance (the monitor's window)"),
            _table(["Subject", "IC (Spearman ρ, −1 to 1)", "Hit rate (% direction right)", "Outcomes (count)"],
                   rows, id="models-realised") if rows else html.P("No realised outcome yet.", className="muted")]

    for c in by_kind.get("confidence", []):
        out.append(html.P(f"Mean confidence of the last 24 h: {_pct(c['value'])} over {_count(c['observations'])} "
                          "predictions." if c["value"] is not None and c["observations"]
                          else "No prediction in the last 24 h to take the mean confidence of.",
                          id="models-confidence"))
    for c in by_kind.get("rollback", []):
        reasons = "; ".join((c.get("details") or {}).get("reasons") or [])
        need = _count(None if c["threshold"] is None else int(c["threshold"]))
        if c["flagged"]:
            text = f"Rolled back: {reasons or 'the champion trailed for the whole persistence'}."
        elif c["value"] is not None:
            text = (f"Trailing since {_count(int(c['value']))} outcomes ({reasons or 'behind a rival'}); rolled back "
                    f"once it still trails after {need} more outcomes.")
        else:
            text = (f"Not trailing: no rival beats the champion's realised IC beyond the margin "
                    f"({_count(c['observations'])} outcomes; a rollback needs {need} outcomes of trailing).")
        out.append(html.P(text, id="models-rollback", style=ALARM if c["flagged"] else None))

    drift = by_kind.get("drift", [])
    if drift:
        rows = []
        for c in sorted(drift, key=lambda c: (not c["flagged"], -(c["value"] or 0.0))):
            details = c.get("details") or {}
            ks, pvalue = details.get("ks"), details.get("ks_pvalue")
            rows.append([c["subject"], "–" if c["value"] is None else f"{c['value']:.3f}",
                         "–" if c["threshold"] is None else f"{c['threshold']:g}",
                         "–" if ks is None else f"{ks:.3f}", "–" if pvalue is None else f"{pvalue:.2g}",
                         _count(c["observations"]), _count(details.get("reference_rows")),
                         "DRIFTED" if c["flagged"] else "no"])
        out += [html.H4("Drift of the inputs against the champion's training data"),
                _table(["Feature", "PSI (index)", "PSI threshold", "KS statistic (0–1)", "KS p-value",
                        "Live rows (count)", "Reference rows (count)", "Drifted"], rows, id="models-drift")]
    return out


def calibration_figure(c: Calibration | None) -> go.Figure:
    """Observed frequency against predicted probability, per bin, for P(up) and P(down)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"dash": "dot", "color": "#8c959f", "width": 1}, hoverinfo="skip"))
    bins = c.bins if c is not None else None
    if bins is not None and len(bins):
        for cls, colour in (("up", "#1a7f37"), ("down", "#cf222e")):
            rows = bins[bins["class"] == cls]
            if not len(rows):
                continue
            fig.add_trace(go.Scatter(
                x=rows["predicted"].tolist(), y=rows["observed"].tolist(), mode="lines+markers", name=f"P({cls})",
                line={"color": colour}, marker={"size": 8},
                customdata=list(zip(rows["count"].tolist(), rows["bin_low"].tolist(), rows["bin_high"].tolist(),
                                    strict=True)),
                hovertemplate=(f"P({cls}) %{{customdata[1]:.0%}}–%{{customdata[2]:.0%}}: predicted %{{x:.1%}}, "
                               "observed %{y:.1%} over %{customdata[0]:,} outcomes<extra></extra>")))
    else:
        fig.add_annotation(x=0.5, y=0.5, text=EMPTY_PLOT, showarrow=False, font={"size": 14}, xref="paper",
                           yref="paper")
    # No title: the section's heading says what this is and the note below which model it is.
    fig.update_layout(template="plotly_white", height=420, margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      legend={"orientation": "h", "y": 1.02, "x": 0, "xanchor": "left", "yanchor": "bottom"})
    fig.update_xaxes(title_text="predicted probability (%)", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title_text="observed frequency (%)", range=[0, 1], tickformat=".0%")
    return fig


def render(snap: Snapshot) -> tuple[Any, Any, Any, go.Figure, str]:
    """(registry, decisions, monitoring, calibration figure, calibration note) of a snapshot."""
    return (registry_section(snap), decisions_section(snap), monitoring_section(snap),
            calibration_figure(snap.calibration), snap.calibration_note)


# -- the page ----------------------------------------------------------------------------------


def layout(data: DashboardData, interval: str | None = None, **_: Any) -> Any:
    from dash import dcc, html

    state = view(interval, data.settings.scorer_interval)
    reading = html.P("Reading…", className="muted")
    return html.Div([
        dcc.Location(id="models-url", refresh="callback-nav"),
        dcc.Store(id="models-view", data=state),
        html.Div([
            html.Span("Bars:", className="muted"),
            dcc.RadioItems(id="models-interval", value=state["interval"], inline=True,
                           options=[{"label": f" {i}", "value": i} for i in INTERVAL_NAMES],
                           inputStyle={"marginLeft": "10px"}),
            html.Span(id="models-status", className="muted"),
        ], className="controls"),
        html.Div([html.H3("Champion and challenger (walk-forward metrics)"),
                  html.Div(id="models-registry", children=reading)], className="section"),
        html.Div([
            html.Div([html.H3("Monitoring"), html.Div(id="models-monitoring", children=reading)],
                     className="section", style={"flex": "1 1 520px", "minWidth": 0}),
            html.Div([html.H3("Calibration of the served probabilities"),
                      dcc.Graph(id=CALIBRATION_ID, config={"displaylogo": False, "responsive": True}),
                      html.P(id="models-calibration-note", className="muted")],
                     className="section", style={"flex": "1 1 480px", "minWidth": 0}),
        ], className="main"),
        html.Div([html.H3("Promotion decisions"), html.Div(id="models-decisions", children=reading)],
                 className="section"),
        dcc.Interval(id="models-refresh", interval=REFRESH_MS),
    ])


class _Loader:
    """One ModelLoader per dashboard process, made on first use (it configures MLflow)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._loader: ModelLoader | None = None
        self._lock = threading.Lock()

    def get(self) -> ModelLoader:
        with self._lock:
            if self._loader is None:
                from tickcast.scoring.models import ModelLoader

                self._loader = ModelLoader(self.settings)
            return self._loader


def register(app: dash.Dash, data: DashboardData) -> None:
    from dash import Input, Output, State, no_update

    loader = _Loader(data.settings)

    @app.callback(
        Output("models-url", "href"),
        Input("models-interval", "value"),
        State("models-view", "data"),
        prevent_initial_call=True,
    )
    def navigate(interval: str, state: dict):
        wanted = view(interval, data.settings.scorer_interval)
        return no_update if wanted == state else f"{PATH}?{urlencode(wanted)}"

    @app.callback(
        Output("models-registry", "children"),
        Output("models-decisions", "children"),
        Output("models-monitoring", "children"),
        Output(CALIBRATION_ID, "figure"),
        Output("models-calibration-note", "children"),
        Output("models-status", "children"),
        Input("models-refresh", "n_intervals"),
        State("models-view", "data"),
    )
    async def refresh(_n: int | None, state: dict):
        interval = view(state.get("interval"), data.settings.scorer_interval)["interval"]
        snap = await gather(data, await asyncio.to_thread(loader.get), interval)
        status = f"{interval} bars · refreshed {datetime.now(UTC):%H:%M:%S} UTC, every {REFRESH_MS // 1000} s"
        return (*render(snap), status)

