"""The Models page: registry tables, decisions and monitoring built from listing and check rows,
the calibration figure, the empty and unreachable registry; then a real MLflow registry with
predictions and bars in Delta (delta-rs), read the way the page reads it; and the page in
Chromium with the monitor's own run written to ``model_monitoring``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dash import html

from dashboard.pages import models as page
from tests.dashboard.conftest import Dashboard, add_analyst, screenshot, serve_dashboard, sign_in
from tickcast.catalog import tables
from tickcast.core.errors import Unavailable
from tickcast.core.featureset import FEATURE_NAMES, FEATURE_SET_VERSION
from tickcast.core.predictions import Prediction, Probabilities
from tickcast.core.predictions import arrow_schema as prediction_schema
from tickcast.core.settings import Settings
from tickcast.models.calibration import Calibration
from tickcast.models.labels import DOWN, NEUTRAL, UP, LabelSpec
from tickcast.models.listing import RegisteredModel, VersionInfo
from tickcast.models.promotions import DecisionRecord

WAIT = 90  # seconds; generous because CI machines are shared, not a speed check
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def text(component: Any) -> str:
    """Every string a component tree shows, space-separated."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(text(c) for c in component)
    return text(getattr(component, "children", None))


def find(component: Any, wanted: str) -> Any:
    """The component with id ``wanted`` in a tree, or None."""
    if isinstance(component, list | tuple):
        return next((f for c in component if (f := find(c, wanted)) is not None), None)
    if component is None or isinstance(component, str | int | float):
        return None
    if getattr(component, "id", None) == wanted:
        return component
    return find(getattr(component, "children", None), wanted)


def table_rows(component: Any) -> list[list[str]]:
    """A simple table's body as text, row by row."""
    body = component.children[1]
    return [[text(cell) for cell in row.children] for row in body.children]


def _version(alias: str, version: str, metrics: dict[str, float], decision: str | None = None) -> VersionInfo:
    return VersionInfo(version=version, alias=alias, created_at=T0, run_id=f"run{version}", metrics=metrics,
                       promotion_decision=decision)


def _listing(interval: str = "1d") -> list[RegisteredModel]:
    return [
        RegisteredModel(f"tickcast-lstm-{interval}", "lstm", interval,
                        champion=_version("champion", "3", {"ic": 0.0712, "accuracy": 0.41, "annual_return": 0.12,
                                                            "rows": 480.0, "custom_score": 1.5},
                                          "promoted: ic 0.0712 beats the champion's 0.0500 by at least 0.005"),
                        challenger=_version("challenger", "4", {"ic": 0.0650, "accuracy": 0.43},
                                            "refused: ic 0.0650 does not beat the champion's 0.0712 by 0.005")),
        RegisteredModel(f"tickcast-transformer-{interval}", "transformer", interval,
                        champion=_version("champion", "2", {"ic": 0.05}, "promoted: there is no champion yet"),
                        challenger=_version("challenger", "2", {"ic": 0.05}, "promoted: there is no champion yet")),
    ]


def _empty_listing(interval: str) -> list[RegisteredModel]:
    return [RegisteredModel(f"tickcast-{a}-{interval}", a, interval, None, None) for a in ("lstm", "transformer")]


# -- pure parts ------------------------------------------------------------------------------


def test_walk_forward_metrics_are_shown_with_their_units() -> None:
    rows = dict(page.metric_rows({"ic": 0.0712, "accuracy": 0.41, "annual_return": -0.034, "custom_score": 1.5,
                                  "sharpe": float("nan")}, {"ic": 0.065}))
    assert rows["IC (Pearson ρ of p50 and the forward return)"] == ["0.0712", "0.0650"]
    assert rows["Accuracy (% of classes right)"] == ["41.0%", "–"]
    assert rows["Annual return after costs (%)"] == ["-3.40%", "–"]
    assert rows["Sharpe ratio (annualised)"] == ["–", "–"]
    assert rows["custom_score"] == ["1.5", "–"]  # a metric the page does not know keeps its name
    assert list(rows)[-1] == "custom_score"


def test_champion_and_challenger_side_by_side_with_their_decisions() -> None:
    snap = page.Snapshot("1d", models=_listing(), decisions=[], serving=[
        ("tickcast-lstm-1d+tickcast-transformer-1d", "3+2", 2)])
    section = html.Div(page.registry_section(snap))
    lstm = find(section, "models-versions-lstm")
    assert [text(h) for h in lstm.children[0].children.children] == ["", "Champion v3", "Challenger v4"]
    rows = {r[0]: r[1:] for r in table_rows(lstm)}
    assert rows["Registered"] == ["2024-05-01 12:00 UTC"] * 2
    assert rows["Promotion decision"] == ["promoted: ic 0.0712 beats the champion's 0.0500 by at least 0.005",
                                          "refused: ic 0.0650 does not beat the champion's 0.0712 by 0.005"]
    assert rows["IC (Pearson ρ of p50 and the forward return)"] == ["0.0712", "0.0650"]
    assert rows["Test rows (count)"] == ["480", "–"]
    # The transformer's challenger alias is on its champion: one column, and a note saying so.
    transformer = find(section, "models-versions-transformer")
    assert [text(h) for h in transformer.children[0].children.children] == ["", "Champion v2"]
    assert "The challenger is the champion (v2)" in text(section)
    assert "Serving 1d predictions now: tickcast-lstm-1d+tickcast-transformer-1d v3+2 (2 symbols)" in text(section)
    assert find(section, "models-empty") is None and find(section, "models-no-pair") is None


def test_an_empty_registry_says_the_baseline_serves() -> None:
    snap = page.Snapshot("1m", models=_empty_listing("1m"), decisions=[], serving=[("momentum-baseline", "1", 3)])
    section = html.Div(page.registry_section(snap))
    empty = text(find(section, "models-empty"))
    assert empty.startswith("No model is registered for 1m bars yet: the momentum baseline serves every 1m prediction")
    assert "momentum-baseline v1 (3 symbols) - the momentum baseline, served until a champion pair exists" in text(section)
    assert text(page.decisions_section(snap)) == "No promotion decision for 1m yet."
    # One architecture with a challenger only: not empty, but no pair serves yet.
    half = [RegisteredModel("tickcast-lstm-1m", "lstm", "1m", None, _version("challenger", "1", {"ic": 0.01})),
            _empty_listing("1m")[1]]
    section = html.Div(page.registry_section(page.Snapshot("1m", models=half)))
    assert find(section, "models-empty") is None and find(section, "models-no-pair") is not None
    assert "No champion yet: this architecture has never passed the promotion gate." in text(section)
    assert "No version registered yet." in text(section)
    assert "No live 1m predictions right now." in text(section)


def test_an_unreadable_registry_is_a_message_and_the_rest_still_shows() -> None:
    snap = page.Snapshot("1d", registry_error=page.message("The model registry cannot be read",
                                                           Unavailable("the model registry cannot be read: refused")),
                         checks=[], calibration_note="Calibration needs the champion from the registry")
    registry, decisions, monitoring, figure, note = page.render(snap)
    # The service's own sentence is not said twice.
    assert text(find(html.Div(registry), "models-registry-error")) == "The model registry cannot be read: refused"
    assert "cannot be read now" in text(decisions)
    assert find(html.Div(monitoring), "models-monitoring-none") is not None
    assert figure.layout.annotations[0].text == page.EMPTY_PLOT and note == snap.calibration_note
    assert "Traceback" not in str(registry)
    assert page.message("Reading", TimeoutError()) == (
        f"Reading: the model registry (MLflow) did not answer within {page.REGISTRY_TIMEOUT_SECONDS:.0f} s")
    long = page.message("Reading", RuntimeError("request " + "x" * 2000 + " Connection refused"))
    assert len(long) < page.MESSAGE_CHARS + 40 and long.endswith("Connection refused")
    assert long.startswith("Reading: RuntimeError: request xxx")


def test_every_versions_decision_newest_first() -> None:
    decisions = [
        DecisionRecord("tickcast-lstm-1d", "lstm", "4", T0, "r4", ("challenger",), False, None, ()),
        DecisionRecord("tickcast-lstm-1d", "lstm", "3", T0, "r3", ("champion",), False, "promoted",
                       ("ic 0.0712 beats the champion's 0.0500 by at least 0.005", "beats every baseline (momentum)")),
        DecisionRecord("tickcast-lstm-1d", "lstm", "1", T0, "r1", (), True, "rolled back",
                       ("champion returned to version 0",)),
    ]
    rows = table_rows(page.decisions_section(page.Snapshot("1d", models=_listing(), decisions=decisions)))
    assert rows == [
        ["tickcast-lstm-1d", "v4", "2024-05-01 12:00 UTC", "challenger", "not put to the gate yet", "–"],
        ["tickcast-lstm-1d", "v3", "2024-05-01 12:00 UTC", "champion", "promoted",
         "ic 0.0712 beats the champion's 0.0500 by at least 0.005; beats every baseline (momentum)"],
        ["tickcast-lstm-1d", "v1", "2024-05-01 12:00 UTC", "past champion", "rolled back",
         "champion returned to version 0"],
    ]


def _check(kind: str, subject: str, metric: str, value: float | None, *, threshold: float | None = None,
           flagged: bool = False, observations: int | None = None, details: dict | None = None) -> dict:
    """A row as ``tickcast.models.watch.latest_checks`` returns it."""
    return {"run_key": "run7", "checked_at": pd.Timestamp(T0), "interval": "1d",
            "model_name": "tickcast-lstm-1d+tickcast-transformer-1d", "model_version": "3+2", "kind": kind,
            "subject": subject, "metric": metric, "value": value, "threshold": threshold, "flagged": flagged,
            "observations": observations, "details": details}


CHECKS = [
    _check("confidence", "champion", "mean_confidence_24h", 0.574, observations=88),
    _check("drift", "return_1d", "psi", 0.031, threshold=0.25, observations=120,
           details={"ks": 0.05, "ks_pvalue": 0.6, "reference_rows": 2400}),
    _check("drift", "rsi_14", "psi", 1.92, threshold=0.25, flagged=True, observations=120,
           details={"ks": 0.71, "ks_pvalue": 1e-30, "reference_rows": 2400}),
    _check("realised", "champion", "hit_rate", 0.49, observations=300),
    _check("realised", "champion", "ic", -0.012, observations=300),
    _check("realised", "momentum baseline", "hit_rate", 0.51, observations=300),
    _check("realised", "momentum baseline", "ic", 0.034, observations=300),
    _check("realised", "predecessor 2+2", "hit_rate", 0.55, observations=280),
    _check("realised", "predecessor 2+2", "ic", 0.081, observations=280),
    _check("rollback", "champion", "trailing_since_outcomes", 120.0, threshold=400.0, observations=300,
           details={"reasons": ["IC -0.012 trails predecessor 2+2 (0.081) by more than 0.05"]}),
]


def test_the_monitors_newest_run_as_tables() -> None:
    section = html.Div(page.monitoring_section(page.Snapshot("1d", checks=CHECKS)))
    assert text(find(section, "models-monitor-run")) == (
        "Newest monitor run run7, checked 2024-05-01 12:00:00 UTC, of tickcast-lstm-1d+tickcast-transformer-1d v3+2.")
    assert table_rows(find(section, "models-realised")) == [
        ["champion", "-0.012", "49.0%", "300"],
        ["predecessor 2+2", "+0.081", "55.0%", "280"],
        ["momentum baseline", "+0.034", "51.0%", "300"],
    ]
    assert text(find(section, "models-confidence")) == "Mean confidence of the last 24 h: 57.4% over 88 predictions."
    quiet = [_check("confidence", "champion", "mean_confidence_24h", None, observations=0)]
    assert text(find(html.Div(page.monitoring_section(page.Snapshot("1d", checks=quiet))), "models-confidence")) == (
        "No prediction in the last 24 h to take the mean confidence of.")
    rollback = find(section, "models-rollback")
    assert text(rollback).startswith("Trailing since 120 outcomes (IC -0.012 trails predecessor 2+2")
    assert "after 400 more outcomes" in text(rollback) and rollback.style is None
    # Drifted inputs first.
    assert table_rows(find(section, "models-drift")) == [
        ["rsi_14", "1.920", "0.25", "0.710", "1e-30", "120", "2,400", "DRIFTED"],
        ["return_1d", "0.031", "0.25", "0.050", "0.6", "120", "2,400", "no"],
    ]


def test_the_rollback_line_follows_the_rule_state() -> None:
    def line(value: float | None, flagged: bool, reasons: list[str]) -> Any:
        rows = [_check("rollback", "champion", "trailing_since_outcomes", value, threshold=400.0, flagged=flagged,
                       observations=50, details={"reasons": reasons} if reasons else None)]
        return find(html.Div(page.monitoring_section(page.Snapshot("1d", checks=rows))), "models-rollback")

    assert text(line(None, False, [])) == ("Not trailing: no rival beats the champion's realised IC beyond the margin "
                                          "(50 outcomes; a rollback needs 400 outcomes of trailing).")
    back = line(500.0, True, ["IC trails the momentum baseline"])
    assert text(back) == "Rolled back: IC trails the momentum baseline." and back.style == page.ALARM
    section = html.Div(page.monitoring_section(page.Snapshot("1d", checks=[])))
    assert text(section).startswith("The monitor has not checked a 1d champion yet")
    failed = html.Div(page.monitoring_section(page.Snapshot("1d", monitoring_error="The monitor's checks cannot be "
                                                                                   "read: OSError: disk")))
    assert text(find(failed, "models-monitoring-error")) == "The monitor's checks cannot be read: OSError: disk"


def test_calibration_figure_draws_each_bin() -> None:
    bins = pd.DataFrame({"class": ["up", "up", "down"], "bin_low": [0.1, 0.6, 0.2], "bin_high": [0.2, 0.7, 0.3],
                         "predicted": [0.15, 0.64, 0.22], "observed": [0.1, 0.7, 0.25], "count": [40, 12, 30]})
    c = Calibration("tickcast-lstm-1d+tickcast-transformer-1d", "3+2", LabelSpec(0.5, 1, 20), T0, 120, 82, bins)
    fig = page.calibration_figure(c)
    traces = {t.name: t for t in fig.data}
    assert list(traces) == ["perfectly calibrated", "P(up)", "P(down)"]
    assert list(traces["P(up)"].x) == [0.15, 0.64] and list(traces["P(up)"].y) == [0.1, 0.7]
    assert [d[0] for d in traces["P(up)"].customdata] == [40, 12]
    assert list(traces["P(down)"].x) == [0.22] and list(traces["P(down)"].y) == [0.25]
    assert fig.layout.xaxis.title.text == "predicted probability (%)"
    assert fig.layout.yaxis.title.text == "observed frequency (%)"
    note = page.calibration_note(c)
    assert note.startswith("tickcast-lstm-1d+tickcast-transformer-1d v3+2: 82 outcomes (symbol × bar, from 120 "
                           "predictions) since 2024-05-01 12:00:00 UTC")
    assert "k = 0.5 standard deviations, horizon 1 bar(s), volatility over 20 bars" in note
    none_yet = Calibration(c.model_name, c.model_version, c.spec, T0, 7, 0, bins.iloc[:0])
    assert page.calibration_note(none_yet).startswith("7 predictions of tickcast-lstm-1d+tickcast-transformer-1d "
                                                      "v3+2 since 2024-05-01 12:00:00 UTC, none whose outcome")
    empty = page.calibration_figure(none_yet)
    assert [t.name for t in empty.data] == ["perfectly calibrated"]
    assert empty.layout.annotations[0].text == page.EMPTY_PLOT


def test_serving_now_counts_the_live_predictions_of_the_interval() -> None:
    payloads = [{"symbol": s, "horizon": h, "model_name": m, "model_version": v} for s, h, m, v in (
        ("A", "1d", "momentum-baseline", "1"), ("B", "1d", "pair", "1+1"), ("C", "1d", "pair", "1+1"),
        ("D", "30m", "momentum-baseline", "1"), ("E", "bogus", "x", "1"))]
    assert page.serving_now(payloads, "1d") == [("pair", "1+1", 2), ("momentum-baseline", "1", 1)]
    assert page.serving_now(payloads, "1m") == [("momentum-baseline", "1", 1)]


@dataclass
class FakeData:
    """What the page needs of DashboardData: the settings and the live predictions."""

    settings: Settings
    payloads: list[dict] | None = None

    async def latest_payloads(self) -> list[dict]:
        return self.payloads or []


def test_the_url_sets_the_interval(settings: Settings) -> None:
    data = FakeData(settings)
    for asked, shown in (("1m", "1m"), ("1d", "1d"), (None, settings.scorer_interval), ("5y", settings.scorer_interval)):
        layout = page.layout(data, interval=asked)
        assert find(layout, "models-interval").value == shown
        assert find(layout, "models-view").data == {"interval": shown}
    assert not settings.home_dir.exists()  # the layout read nothing


class _FailingLoader:
    def client(self) -> Any:
        return self

    def get_registered_model(self, name: str) -> Any:
        raise ConnectionError("Connection refused")

    def aliases(self, interval: str) -> dict:
        raise AssertionError("not reached: the history fails first")


def test_gather_keeps_the_monitoring_when_the_registry_is_down(settings: Settings) -> None:
    snap = asyncio.run(page.gather(FakeData(settings), _FailingLoader(), "1d"))
    assert snap.registry_error == "The model registry cannot be read: Connection refused"
    assert snap.models is None and snap.checks == [] and snap.calibration is None
    assert snap.calibration_note.startswith("Calibration needs the champion from the registry")


class _SilentLoader:
    def __init__(self) -> None:
        self.release = threading.Event()

    def client(self) -> Any:
        self.release.wait(30)
        raise ConnectionError("gave up")


def test_gather_stops_waiting_for_a_registry_that_does_not_answer(settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(page, "REGISTRY_TIMEOUT_SECONDS", 0.2)
    loader = _SilentLoader()

    async def read() -> page.Snapshot:
        try:
            return await page.gather(FakeData(settings), loader, "1d")
        finally:
            loader.release.set()  # the abandoned read ends; asyncio.run waits for its thread

    snap = asyncio.run(read())
    assert snap.registry_error == "The model registry cannot be read: the model registry (MLflow) did not answer within 0 s"
    assert snap.checks == []


def test_an_unreachable_mlflow_server_is_a_message_not_an_empty_registry(settings: Settings,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow  # noqa: F401 - imported here, not inside the page's 20 s budget (slow on a loaded machine)

    from tickcast.platform.processes import free_port
    from tickcast.scoring.models import ModelLoader

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of after minutes of retries
    down = settings.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
    snap = asyncio.run(page.gather(FakeData(down), ModelLoader(down), "1d"))
    assert snap.registry_error is not None
    assert snap.registry_error.startswith("The model registry cannot be read: API request to http://127.0.0.1:")
    assert snap.registry_error.endswith("Connection refused\"))")
    registry = html.Div(page.registry_section(snap))
    assert find(registry, "models-empty") is None and find(registry, "models-registry-error") is not None


# -- a real registry -----------------------------------------------------------------------------

PAIR = "tickcast-lstm-1d+tickcast-transformer-1d"
SYMBOLS = ("MKT", "S0001", "S0002")  # the retrain experiment's (experiments/demo.yaml), for the monitor
DAYS = 60
SPEC = LabelSpec(k=0.5, horizon=1, vol_window=5)
LSTM_V1 = {"ic": 0.0712, "rank_ic": 0.065, "accuracy": 0.41, "annual_return": 0.12, "sharpe": 1.3, "rows": 480.0}
LSTM_V2 = {"ic": 0.0690, "rank_ic": 0.06, "accuracy": 0.43, "annual_return": 0.10, "sharpe": 1.1, "rows": 480.0}
TRANSFORMER_V1 = {"ic": 0.0580, "accuracy": 0.39, "rows": 480.0}
BASELINES = {"momentum": {"ic": 0.02}, "no_change": {"ic": None}}


@dataclass
class Platform:
    settings: Settings
    closes: dict[str, np.ndarray]
    starts: list[datetime]
    served: dict[str, dict[int, dict[str, float]]]  # symbol -> bar -> the last probabilities said
    latest: list[Prediction]
    decisions: dict[str, str]  # "lstm v1" ... -> the decision's summary


def build_platform(settings: Settings) -> Platform:
    """Daily bars and features of the demo market up to yesterday, the champion pair's
    predictions (two per bar: the later counts), and a registry with real decisions: LSTM v1
    and Transformer v1 promoted, LSTM v2 refused; the run logs its label rule as `tickcast train`
    does."""
    import mlflow

    from tickcast.models import registry, tracking

    rng = np.random.default_rng(11)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [today - timedelta(days=DAYS - i) for i in range(DAYS)]
    closes, bars, features = {}, [], []
    for symbol in SYMBOLS:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, DAYS)))
        closes[symbol] = close
        for t, c in zip(starts, close, strict=True):
            bars.append({"symbol": symbol, "window_start": t, "window_end": t + timedelta(days=1), "open": c,
                         "high": c, "low": c, "close": c, "volume": 1e5, "trades": 1})
            row = dict.fromkeys(FEATURE_NAMES)
            row.update({"symbol": symbol, "interval": "1d", "window_start": t, "window_end": t + timedelta(days=1),
                        "return_1d": rng.normal(0, 0.02), "rsi_14": rng.normal(50, 5),
                        "feature_set_version": FEATURE_SET_VERSION, "computed_at": t})
            features.append(row)
    tables.append_arrow(settings, "bars_1d", pa.Table.from_pylist(bars, schema=tables.arrow_schema("bars_1d")))
    tables.append_arrow(settings, "features", pa.Table.from_pylist(features, schema=tables.arrow_schema("features")))

    predictions, served = [], {}
    for symbol in SYMBOLS[1:]:
        served[symbol] = {}
        for i in range(10, DAYS):
            for made_after, up in ((1, 0.5), (60, float(rng.uniform(0.05, 0.9)))):
                down = float(rng.uniform(0.0, 1.0 - up))
                stamp = starts[i] + timedelta(hours=20)
                close = float(closes[symbol][i])
                predictions.append(Prediction(
                    symbol=symbol, horizon="1d", predicted_return=up - down, predicted_price=close * (1 + up - down),
                    p10=-0.02, p50=up - down, p90=0.02, probabilities=Probabilities(up=up, neutral=1 - up - down,
                                                                                  down=down),
                    signal="BUY" if up > 0.5 else "HOLD", confidence=max(up, down), model_name=PAIR,
                    model_version="1+1", data_timestamp=stamp, predicted_at=stamp + timedelta(seconds=made_after)))
            served[symbol][i] = {"up": up, "down": down}
    tables.append_arrow(settings, tables.PREDICTIONS, pa.Table.from_pylist(
        [p.model_dump() for p in predictions], schema=prediction_schema()))

    tracking.configure_mlflow(settings)
    experiment = tracking.experiment(settings, "tickcast-models-page")
    client = registry.client()
    decisions = {}
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_params({"labels.k": str(SPEC.k), "labels.horizon": str(SPEC.horizon),
                           "labels.vol_window": str(SPEC.vol_window)})
        for arch, figures in (("lstm", LSTM_V1), ("transformer", TRANSFORMER_V1)):
            name = registry.registered_name(arch, "1d")
            version = registry.register(client, name=name, source=f"{run.info.artifact_uri}/bundle_{arch}",
                                        run_id=run.info.run_id, tags={"features": "return_1d,rsi_14", **{
                                            f"metric.{k}": str(v) for k, v in figures.items()}})
            decision = registry.promotion_gate(figures, None, BASELINES, metric="ic", margin=0.005)
            registry.make_champion(client, name, version.version, decision)
            decisions[f"{arch} v1"] = decision.summary()
        name = registry.registered_name("lstm", "1d")
        second = registry.register(client, name=name, source=f"{run.info.artifact_uri}/bundle_lstm",
                                   run_id=run.info.run_id, tags={f"metric.{k}": str(v) for k, v in LSTM_V2.items()})
        refusal = registry.promotion_gate(LSTM_V2, LSTM_V1, BASELINES, metric="ic", margin=0.005)
        registry.record_refusal(client, name, second.version, refusal)
        decisions["lstm v2"] = refusal.summary()
    latest = [p for p in predictions if p.data_timestamp == starts[-1] + timedelta(hours=20)][1::2]
    return Platform(settings, closes, starts, served, latest, decisions)


def expected_bins(platform: Platform) -> dict[str, list[tuple[float, float, int]]]:
    """(mean predicted, observed frequency, count) per bin of P(up) and P(down), worked out here
    from the closes: the next close's log move against k sample deviations of the last
    vol_window log moves."""
    pairs = []
    for symbol, said in platform.served.items():
        moves = np.diff(np.log(platform.closes[symbol]))
        for i, p in said.items():
            if i + 1 >= DAYS:
                continue
            sigma = float(np.std(moves[i - SPEC.vol_window:i], ddof=1))
            step = float(moves[i])
            label = UP if step >= SPEC.k * sigma else DOWN if step <= -SPEC.k * sigma else NEUTRAL
            pairs.append((p, label))
    out = {}
    for cls, code in (("up", UP), ("down", DOWN)):
        bins: dict[int, list[tuple[float, bool]]] = {}
        for p, label in pairs:
            bins.setdefault(min(int(p[cls] * 10), 9), []).append((p[cls], label == code))
        out[cls] = [(float(np.mean([q for q, _ in rows])), float(np.mean([h for _, h in rows])), len(rows))
                    for _, rows in sorted(bins.items())]
    return out


@pytest.mark.slow  # MLflow's registry
def test_a_real_registry_as_the_page_reads_it(settings: Settings) -> None:
    from tickcast.models.listing import registered_models
    from tickcast.scoring.models import ModelLoader

    platform = build_platform(settings)
    loader = ModelLoader(settings)
    payloads = [p.model_dump(mode="json") for p in platform.latest]
    snap = asyncio.run(page.gather(FakeData(settings, payloads), loader, "1d"))
    assert snap.registry_error is None and snap.monitoring_error is None
    assert snap.models == registered_models(ModelLoader(settings), "1d")

    registry, decisions, monitoring, figure, note = page.render(snap)
    section = html.Div(registry)
    lstm = {r[0]: r[1:] for r in table_rows(find(section, "models-versions-lstm"))}
    assert lstm["Promotion decision"] == [platform.decisions["lstm v1"], platform.decisions["lstm v2"]]
    assert lstm["IC (Pearson ρ of p50 and the forward return)"] == ["0.0712", "0.0690"]
    assert lstm["Accuracy (% of classes right)"] == ["41.0%", "43.0%"]
    assert lstm["Annual return after costs (%)"] == ["+12.00%", "+10.00%"]
    assert lstm["Test rows (count)"] == ["480", "480"]
    transformer = {r[0]: r[1:] for r in table_rows(find(section, "models-versions-transformer"))}
    assert transformer["IC (Pearson ρ of p50 and the forward return)"] == ["0.0580"]
    assert f"Serving 1d predictions now: {PAIR} v1+1 (2 symbols)" in text(section)
    assert [r[:5] for r in table_rows(decisions)] == [
        ["tickcast-lstm-1d", "v2", lstm["Registered"][1], "challenger", "refused"],
        ["tickcast-lstm-1d", "v1", lstm["Registered"][0], "champion", "promoted"],
        ["tickcast-transformer-1d", "v1", transformer["Registered"][0], "challenger, champion", "promoted"],
    ]
    assert find(html.Div(monitoring), "models-monitoring-none") is not None

    # Calibration: the pair's later prediction of each bar against the class worked out here.
    expected = expected_bins(platform)
    traces = {t.name: t for t in figure.data}
    for cls in ("up", "down"):
        got = list(zip(traces[f"P({cls})"].x, traces[f"P({cls})"].y, [d[0] for d in traces[f"P({cls})"].customdata],
                       strict=True))
        assert [(pytest.approx(x), pytest.approx(y), n) for x, y, n in expected[cls]] == got
    outcomes = sum(n for _, _, n in expected["up"])
    assert snap.calibration is not None and snap.calibration.outcomes == outcomes == 2 * (DAYS - 11)
    assert snap.calibration.predictions == 2 * 2 * (DAYS - 10)
    assert f"{PAIR} v1+1: {outcomes} outcomes" in note and "k = 0.5 standard deviations" in note

    # The other interval has nothing registered: the page says the baseline serves.
    other = asyncio.run(page.gather(FakeData(settings, payloads), loader, "1m"))
    shown = html.Div(page.registry_section(other))
    assert find(shown, "models-empty") is not None
    assert other.calibration is None and other.calibration_note.startswith("No champion pair for 1m bars")
    assert text(page.decisions_section(other)) == "No promotion decision for 1m yet."


# -- in the browser --------------------------------------------------------------------------------

READ_CALIBRATION = f"""
const plot = document.querySelector('#{page.CALIBRATION_ID} .js-plotly-plot');
if (!plot || !plot.data) {{ return null; }}
return plot.data.map(t => ({{name: t.name, x: t.x, y: t.y}}));
"""


@pytest.fixture
def monitored(settings: Settings, kafka_bootstrap: str) -> Platform:
    """The platform above, checked once by the monitor's own run (`run1`), and its champion's
    latest predictions in the online store."""
    from tests.pipeline_events import alerts_topic
    from tickcast.catalog.online import OnlineStore
    from tickcast.models.watch import scheduled_monitor

    platform = build_platform(settings)
    checked = settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap,
                                          "topic_alerts": alerts_topic(kafka_bootstrap), "monitor_min_rows": 20})
    scheduled_monitor(checked, "run1")
    OnlineStore(settings.online_store_path).upsert(platform.latest)
    return platform


@pytest.fixture
def models_dashboard(monitored: Platform, tmp_path: Path, kafka_bootstrap: str) -> Iterator[Dashboard]:
    add_analyst(monitored.settings)
    yield from serve_dashboard(monitored.settings, tmp_path, TICKCAST_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)


def _shown(driver, element_id: str, contains: str = "") -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        found = d.find_elements(By.ID, element_id)
        return found and contains in found[0].text and found[0].text

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(ready)
    except Exception as exc:
        raise AssertionError(f"#{element_id} never showed {contains!r}") from exc


@pytest.mark.browser
@pytest.mark.slow
def test_model_health_in_the_browser(browser, models_dashboard: Dashboard, monitored: Platform) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tickcast.models.listing import registered_models
    from tickcast.models.watch import latest_checks
    from tickcast.scoring.models import ModelLoader

    settings = monitored.settings
    listed = {m.architecture: m for m in registered_models(ModelLoader(settings), "1d")}
    checks = latest_checks(settings, "1d")
    assert {c["run_key"] for c in checks} == {"run1"}

    sign_in(browser, models_dashboard.url, next_path="/models?interval=1d")
    lstm = _shown(browser, "models-versions-lstm", "Champion v1")
    assert "Challenger v2" in lstm
    assert f"Promotion decision {monitored.decisions['lstm v1']} {monitored.decisions['lstm v2']}" in lstm
    ic = page.METRICS["ic"][0]
    assert f"{ic} {listed['lstm'].champion.metrics['ic']:.4f} {listed['lstm'].challenger.metrics['ic']:.4f}" in lstm
    transformer = _shown(browser, "models-versions-transformer", "Champion v1")
    assert f"{ic} {listed['transformer'].champion.metrics['ic']:.4f}" in transformer
    assert _shown(browser, "models-serving", PAIR).endswith(f"{PAIR} v1+1 (2 symbols)")
    decisions = _shown(browser, "models-decisions-table", "refused")
    assert monitored.decisions["lstm v2"].removeprefix("refused: ") in decisions

    # The monitor's run, as latest_checks returns it.
    run = _shown(browser, "models-monitor-run", "run1")
    assert f"of {PAIR} v1+1" in run
    realised = {(c["subject"], c["metric"]): c for c in checks if c["kind"] == "realised"}
    realised_rows = _shown(browser, "models-realised", "champion").splitlines()
    for subject in ("champion", "momentum baseline"):
        ic_check, hit_check = realised[(subject, "ic")], realised[(subject, "hit_rate")]
        assert (f"{subject} {page._ic(ic_check['value'])} {page._pct(hit_check['value'])} "
                f"{ic_check['observations']:,}") in realised_rows
    # Drift and the rollback rule: as the page renders the service's rows.
    rendered = html.Div(page.monitoring_section(page.Snapshot("1d", checks=checks)))
    assert {c["subject"] for c in checks if c["kind"] == "drift"} == {"return_1d", "rsi_14"}
    drift_rows = _shown(browser, "models-drift", "rsi_14").splitlines()
    assert [" ".join(row) for row in table_rows(find(rendered, "models-drift"))] == drift_rows[-2:]
    [rollback] = [c for c in checks if c["kind"] == "rollback"]
    assert rollback["value"] is None and not rollback["flagged"]  # one run of a fresh champion: not trailing
    assert _shown(browser, "models-rollback", "Not trailing") == text(find(rendered, "models-rollback"))

    # The calibration plot holds the bins worked out from the closes.
    expected = expected_bins(monitored)
    traces = WebDriverWait(browser, WAIT, poll_frequency=0.25).until(
        lambda d: (t := d.execute_script(READ_CALIBRATION)) and len(t) == 3 and t)
    by_name = {t["name"]: t for t in traces}
    for cls in ("up", "down"):
        assert by_name[f"P({cls})"]["x"] == pytest.approx([x for x, _, _ in expected[cls]])
        assert by_name[f"P({cls})"]["y"] == pytest.approx([y for _, y, _ in expected[cls]])
    assert "outcomes" in _shown(browser, "models-calibration-note", "k = 0.5")
    screenshot(browser, "models")

    # Minute bars: nothing registered, the baseline serves; the URL keeps the choice.
    browser.find_element(By.CSS_SELECTOR, "#models-interval input[value='1m']").click()
    empty = _shown(browser, "models-empty", "No model is registered for 1m bars yet")
    assert "the momentum baseline serves every 1m prediction" in empty
    assert browser.current_url.endswith("/models?interval=1m")
    assert _shown(browser, "models-monitoring-none", "has not checked a 1m champion")
    assert _shown(browser, "models-calibration-note", "No champion pair for 1m bars")
    browser.refresh()
    _shown(browser, "models-empty", "1m bars")
    assert browser.find_element(By.CSS_SELECTOR, "#models-interval input[value='1m']").is_selected()
