"""One run of the `monitor` DAG: the champion pair's checks (``tickcast.models.monitoring``)
over the stored tables, written to Delta ``model_monitoring``, told to the alert engine, and
acted on - a drifted input asks for a retrain (the DAG triggers it), a sustained
underperformance rolls the champion back to its predecessor.

Realised outcomes: for each stored prediction of a version, the last one made during a bar
(what it said at the close) is compared with the return from that bar's close to the next
bar's close, once that bar exists. The momentum baseline is scored on the same rows (the
return over the previous ``momentum_lookback`` bars, known at the close), and the predecessor
pair on its own stored predictions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from tickcast.core.intervals import interval as interval_of
from tickcast.core.settings import Settings
from tickcast.models import registry
from tickcast.models.monitoring import (
    Realised,
    RollbackPolicy,
    RollbackState,
    feature_drift,
    realised,
    rollback_check,
)
from tickcast.models.networks import ARCHITECTURES

log = logging.getLogger("tickcast.monitor")

MONITORING = "model_monitoring"
PREDICTION_COLUMNS = ["symbol", "model_name", "model_version", "predicted_return", "confidence", "data_timestamp",
                      "predicted_at"]


def policy(settings: Settings) -> RollbackPolicy:
    return RollbackPolicy(margin=settings.monitor_rollback_margin, z=settings.monitor_rollback_z,
                          persistence_outcomes=settings.monitor_rollback_persistence,
                          min_outcomes=settings.monitor_min_outcomes)


def outcomes(predictions: pd.DataFrame, bars: pd.DataFrame, interval: str, momentum_lookback: int) -> pd.DataFrame:
    """One row per (version, symbol, bar) predicted, with the realised return to the next bar's
    close and the momentum baseline's prediction for the same bar; bars without a next one yet
    are left out."""
    if predictions.empty or bars.empty:
        return pd.DataFrame(columns=["model_version", "symbol", "window_start", "predicted_return", "confidence",
                                     "realised_return", "momentum"])
    width = pd.Timedelta(seconds=interval_of(interval).seconds)
    frame = predictions.copy()
    frame["window_start"] = pd.to_datetime(frame["data_timestamp"], utc=True).dt.floor(width)
    frame = (frame.sort_values("predicted_at").groupby(["model_version", "symbol", "window_start"], as_index=False)
             .last())
    closes = bars.sort_values(["symbol", "window_start"]).copy()
    closes["window_start"] = pd.to_datetime(closes["window_start"], utc=True)
    grouped = closes.groupby("symbol")["close"]
    closes["realised_return"] = grouped.shift(-1) / closes["close"] - 1.0
    closes["momentum"] = closes["close"] / grouped.shift(momentum_lookback) - 1.0
    joined = frame.merge(closes[["symbol", "window_start", "realised_return", "momentum"]],
                         on=["symbol", "window_start"], how="inner")
    return joined[joined["realised_return"].notna()].reset_index(drop=True)


def _row(run_key: str, now: datetime, interval: str, model_name: str, model_version: str, kind: str, subject: str,
         metric: str, value: float | None, threshold: float | None, flagged: bool, observations: int | None,
         details: dict | None = None) -> dict[str, Any]:
    finite = value if value is not None and np.isfinite(value) else None
    return {"run_key": run_key, "checked_at": now, "interval": interval, "model_name": model_name,
            "model_version": model_version, "kind": kind, "subject": subject, "metric": metric, "value": finite,
            "threshold": threshold, "flagged": flagged, "observations": observations,
            "details": json.dumps(details, default=str) if details else None}


def _last_rollback_state(settings: Settings, model_version: str) -> RollbackState:
    import pyarrow.dataset as pads

    from tickcast.catalog.tables import read_frame

    rows = read_frame(settings, MONITORING, ["value", "checked_at"],
                      (pads.field("model_version") == model_version) & (pads.field("kind") == "rollback")
                      & (pads.field("metric") == "trailing_since_outcomes"))
    if rows.empty:
        return RollbackState()
    last = rows.sort_values("checked_at").iloc[-1]["value"]
    return RollbackState(None if pd.isna(last) else int(last))


def scheduled_monitor(settings: Settings, run_key: str, now: datetime | None = None) -> dict[str, Any]:
    """Check the retrain experiment's champion pair; returns what was found and done
    (``drift``: a retrain is due; ``rolled_back``: the champion was rolled back), also written
    to ``reports/monitor/<run_key>.json``."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from tickcast.catalog.tables import FEATURES, PREDICTIONS, append_arrow, arrow_schema, read_frame
    from tickcast.models import tracking
    from tickcast.models.lifecycle import read_bars, retrain_config

    now = now or datetime.now(UTC)
    config = retrain_config(settings)
    tracking.configure_mlflow(settings)
    client = registry.client()
    names = [registry.registered_name(arch, config.interval) for arch in ARCHITECTURES]  # lstm, transformer
    champions = {name: registry.champion(client, name) for name in names}
    if any(version is None for version in champions.values()):
        log.info("no champion pair for %s yet: nothing to monitor", config.interval)
        return _reported(settings, run_key, {"run": run_key, "champion": None, "drift": False, "rolled_back": False})
    model_name = registry.pair_label(*names)
    model_version = registry.pair_label(*(champions[name].version for name in names))
    lstm = champions[names[0]]
    features = (lstm.tags or {}).get("features", ",".join(config.features)).split(",")
    promoted_at = datetime.fromtimestamp(int(lstm.creation_timestamp) / 1000, tz=UTC)
    rows: list[dict[str, Any]] = []

    def add(*args: Any, **kwargs: Any) -> None:
        rows.append(_row(run_key, now, config.interval, model_name, model_version, *args, **kwargs))

    # -- drift of the inputs against what the champion learned from
    symbols = [config.index, *config.symbols]
    where = (pads.field("interval") == config.interval) & pads.field("symbol").isin(symbols)
    stored = read_frame(settings, FEATURES, ["symbol", "window_end", *features], where)
    stored["window_end"] = pd.to_datetime(stored["window_end"], utc=True)
    reference = stored[(stored["window_end"] >= config.start) & (stored["window_end"] < promoted_at)]
    live = stored[stored["window_end"] >= now - timedelta(days=settings.monitor_live_days)]
    drifts = feature_drift(reference, live, features, psi_threshold=settings.monitor_psi_threshold,
                           ks_pvalue_threshold=settings.monitor_ks_pvalue, min_rows=settings.monitor_min_rows)
    for d in drifts:
        add("drift", d.feature, "psi", d.psi, settings.monitor_psi_threshold, d.drifted, d.live_rows,
            {"ks": d.ks, "ks_pvalue": d.ks_pvalue, "reference_rows": d.reference_rows})
    drifted = [d.feature for d in drifts if d.drifted]

    # -- realised performance against the predecessor and the momentum baseline
    since = now - timedelta(days=settings.monitor_window_days)
    predictions = read_frame(settings, PREDICTIONS, PREDICTION_COLUMNS,
                             (pads.field("model_name") == model_name) & (pads.field("predicted_at") >= since))
    bars = read_bars(settings, symbols, config.interval, since - timedelta(days=30), now + timedelta(days=1))
    scored = outcomes(predictions, bars, config.interval, config.evaluation.momentum_lookback)
    mine = scored[scored["model_version"] == model_version]
    champion = realised(mine["predicted_return"].to_numpy(float), mine["realised_return"].to_numpy(float))
    rivals: dict[str, Realised] = {
        "momentum baseline": realised(mine["momentum"].to_numpy(float), mine["realised_return"].to_numpy(float))}
    previous = [registry.history(client, name) for name in names]
    if all(len(h) >= 2 for h in previous):
        predecessor = registry.pair_label(*(h[-2] for h in previous))
        theirs = scored[scored["model_version"] == predecessor]
        rivals[f"predecessor {predecessor}"] = realised(theirs["predicted_return"].to_numpy(float),
                                                       theirs["realised_return"].to_numpy(float))
    for subject, figures in (("champion", champion), *rivals.items()):
        for metric in ("ic", "hit_rate"):
            add("realised", subject, metric, getattr(figures, metric), None, False, figures.outcomes)
    recent = predictions[pd.to_datetime(predictions["predicted_at"], utc=True) >= now - timedelta(days=1)]
    add("confidence", "champion", "mean_confidence_24h",
        float(recent["confidence"].mean()) if len(recent) else None, None, False, len(recent))

    rule = policy(settings)
    back, state = rollback_check(champion, rivals, rule, _last_rollback_state(settings, model_version),
                                 seen=champion.outcomes)
    add("rollback", "champion", "trailing_since_outcomes",
        None if state.trailing_since is None else float(state.trailing_since), float(rule.persistence_outcomes), back,
        champion.outcomes, {"reasons": state.reasons})
    rolled_back: dict[str, Any] = {}
    if back:
        for name in names:
            try:
                rolled_back[name] = registry.rollback(client, name)
            except registry.RegistryError as exc:
                rolled_back[name] = str(exc)
        log.warning("rolled %s back: %s", model_name, "; ".join(state.reasons))

    append_arrow(settings, MONITORING, pa.Table.from_pylist(rows, schema=arrow_schema(MONITORING)))
    _tell(settings, model_name, model_version, drifted, drifts, back, state, rolled_back)
    return _reported(settings, run_key, {"run": run_key, "champion": f"{model_name} {model_version}", "drift": bool(drifted),
            "drifted": drifted, "rolled_back": back, "rollback": {k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in rolled_back.items()},
            "realised": {k: asdict(v) for k, v in {"champion": champion, **rivals}.items()}, "rows": len(rows)})


def _reported(settings: Settings, run_key: str, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` as plain JSON, written to ``reports/monitor/<run_key>.json``."""
    from tickcast.catalog.reports import write_run_report

    plain = _plain(report)
    write_run_report(settings, "monitor", run_key, plain)
    return plain


def _plain(value: Any) -> Any:
    """JSON as every reader takes it (an Airflow XCom, a report): NaN and infinities become null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _tell(settings: Settings, model_name: str, model_version: str, drifted: list[str], drifts: list, back: bool,
          state: RollbackState, rolled_back: dict) -> None:
    """Pipeline events for the alert engine: drift firing or resolved, and a rollback."""
    from tickcast.catalog.events import EventPublisher
    from tickcast.core.events import PipelineEvent

    publisher = EventPublisher(settings, "events")
    try:
        worst = {d.feature: round(d.psi, 3) for d in drifts if d.drifted}
        publisher.report(PipelineEvent.reported(
            "drift", model_name, "firing" if drifted else "resolved",
            (f"inputs of {model_name} v{model_version} drifted from its training data: {', '.join(drifted)} "
             "(a retrain was asked for)") if drifted else f"inputs of {model_name} v{model_version} match its training data",
            severity="warning", details={"psi": worst}))
        if back:
            publisher.report(PipelineEvent.reported(
                "model_rolled_back", model_name, "firing",
                f"{model_name} v{model_version} rolled back: {'; '.join(state.reasons)}", severity="critical",
                details={name: str(v) for name, v in rolled_back.items()}))
    finally:
        publisher.flush()


def latest_checks(settings: Settings, interval: str) -> list[dict[str, Any]]:
    """The rows of the newest monitor run of ``interval``'s champion (none before the first run)."""
    import pyarrow.dataset as pads

    from tickcast.catalog.tables import arrow_schema, read_frame

    rows = read_frame(settings, MONITORING, arrow_schema(MONITORING).names, pads.field("interval") == interval)
    if rows.empty:
        return []
    newest = rows.loc[rows["checked_at"].idxmax(), "run_key"]
    found = rows[rows["run_key"] == newest].sort_values(["kind", "subject", "metric"])
    out = []
    for record in found.to_dict("records"):
        record["details"] = json.loads(record["details"]) if isinstance(record["details"], str) else None
        record["value"] = None if pd.isna(record["value"]) else float(record["value"])
        record["threshold"] = None if pd.isna(record["threshold"]) else float(record["threshold"])
        record["observations"] = None if pd.isna(record["observations"]) else int(record["observations"])
        out.append(record)
    return out
