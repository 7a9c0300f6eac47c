"""The monitor's run on real tables, a real MLflow registry and the real broker: a planted drift
of one input is found and reported; a champion that stopped working while its predecessor
works is rolled back once its trailing has lasted the persistence, and the rollback reaches
the registry, the monitoring table and the alert engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from tests.pipeline_events import alerts_topic, read_events
from tickcast.catalog import tables
from tickcast.core.featureset import FEATURE_NAMES, FEATURE_SET_VERSION
from tickcast.core.settings import Settings

NAMES = ("tickcast-lstm-1d", "tickcast-transformer-1d")
# The retrain experiment's market (experiments/demo.yaml): the index and two stocks.
SYMBOLS = ("MKT", "S0001", "S0002")
STOCKS = len(SYMBOLS) - 1
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _market(settings: Settings, days: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Daily bars of the demo experiment's symbols up to yesterday, and their closes."""
    starts = [TODAY - timedelta(days=days - i) for i in range(days)]
    closes, rows = {}, []
    for symbol in SYMBOLS:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
        closes[symbol] = close
        rows += [{"symbol": symbol, "window_start": t, "window_end": t + timedelta(days=1), "open": c, "high": c,
                  "low": c, "close": c, "volume": 1e5, "trades": 1} for t, c in zip(starts, close, strict=True)]
    tables.append_arrow(settings, "bars_1d", pa.Table.from_pylist(rows, schema=tables.arrow_schema("bars_1d")))
    return {"starts": np.array(starts), **closes}


def _features(settings: Settings, market: dict, rng: np.random.Generator, drift_days: int) -> None:
    """rsi_14 moves far from where it was for the last ``drift_days``; return_1d does not."""
    starts = market["starts"]
    rows = []
    for symbol in SYMBOLS:
        for i, t in enumerate(starts):
            late = i >= len(starts) - drift_days
            row = {name: None for name in FEATURE_NAMES}
            row.update({"symbol": symbol, "interval": "1d", "window_start": t, "window_end": t + timedelta(days=1),
                        "return_1d": rng.normal(0, 0.02), "rsi_14": rng.normal(80 if late else 50, 5),
                        "feature_set_version": FEATURE_SET_VERSION, "computed_at": t})
            rows.append(row)
    tables.append_arrow(settings, "features", pa.Table.from_pylist(rows, schema=tables.arrow_schema("features")))


def _predictions(settings: Settings, market: dict, version: str, days: range, skill: float,
                 rng: np.random.Generator) -> None:
    """What ``version`` said at each bar's close: the next return times ``skill`` plus noise."""
    rows = []
    for symbol in SYMBOLS[1:]:
        close = market[symbol]
        for i in days:
            nxt = close[i + 1] / close[i] - 1
            t = market["starts"][i]
            rows.append({"symbol": symbol, "horizon": "1d", "predicted_return": skill * nxt + rng.normal(0, 0.005),
                         "signal": "HOLD", "confidence": 0.5, "model_name": "+".join(NAMES), "model_version": version,
                         "data_timestamp": t + timedelta(hours=20), "predicted_at": t + timedelta(hours=20, seconds=1)})
    from tickcast.core.predictions import arrow_schema  # the table's schema holds structs: the contract's own

    full = [{name: row.get(name) for name in arrow_schema().names} for row in rows]
    tables.append_arrow(settings, "predictions", pa.Table.from_pylist(full, schema=arrow_schema()))


def _registry(settings: Settings) -> None:
    """Versions 1 and 2 of both networks registered; 1 was champion, 2 is now."""
    import mlflow

    from tickcast.models import registry, tracking

    tracking.configure_mlflow(settings)
    experiment = tracking.experiment(settings, "watch-test")
    client = registry.client()
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        for name in NAMES:
            for _ in (1, 2):
                version = registry.register(client, name=name, source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id,
                                            tags={"features": "return_1d,rsi_14"})
                registry.make_champion(client, name, version.version, None)


@pytest.mark.slow  # MLflow's registry and the broker
def test_drift_is_found_and_a_decayed_champion_is_rolled_back_after_the_persistence(
        settings: Settings, kafka_bootstrap: str) -> None:
    from tickcast.models import registry
    from tickcast.models.lifecycle import retrain_config

    config = retrain_config(settings)
    assert (config.index, *config.symbols) == SYMBOLS
    from tickcast.models.watch import latest_checks, scheduled_monitor

    topic = alerts_topic(kafka_bootstrap)
    settings = settings.model_copy(update={
        "kafka_bootstrap_servers": kafka_bootstrap, "topic_alerts": topic, "monitor_min_outcomes": 60,
        "monitor_rollback_persistence": 10 * STOCKS, "monitor_window_days": 90, "monitor_min_rows": 50})
    rng = np.random.default_rng(3)
    market = _market(settings, 120, rng)
    _features(settings, market, rng, drift_days=30)
    _registry(settings)
    # The predecessor worked; the champion, since it took over, says nothing about the next day.
    _predictions(settings, market, "1+1", range(30, 80), 1.0, rng)
    _predictions(settings, market, "2+2", range(60, 100), 0.0, rng)

    first = scheduled_monitor(settings, "run1")
    assert first["drift"] and first["drifted"] == ["rsi_14"]
    assert not first["rolled_back"]  # trailing, but only just started
    assert first["realised"]["champion"]["outcomes"] == STOCKS * 40
    assert first["realised"]["predecessor 1+1"]["ic"] > 0.8

    _predictions(settings, market, "2+2", range(100, 110), 0.0, rng)  # ten more days: the persistence
    second = scheduled_monitor(settings, "run2")
    assert second["rolled_back"]
    client = registry.client()
    assert [str(registry.champion(client, name).version) for name in NAMES] == ["1", "1"]

    checks = latest_checks(settings, "1d")
    assert {c["run_key"] for c in checks} == {"run2"}
    [rollback] = [c for c in checks if c["kind"] == "rollback"]
    assert rollback["flagged"] and "trails predecessor 1+1" in rollback["details"]["reasons"][0]
    drift = {c["subject"]: c for c in checks if c["kind"] == "drift"}
    assert drift["rsi_14"]["flagged"] and not drift["return_1d"]["flagged"] and drift["rsi_14"]["value"] > 0.25
    events = [(e.kind, e.status) for e in read_events(kafka_bootstrap, topic)]
    assert events.count(("drift", "firing")) == 2 and events.count(("model_rolled_back", "firing")) == 1


@pytest.mark.slow  # MLflow's registry
def test_without_a_champion_the_monitor_checks_nothing(settings: Settings) -> None:
    from tickcast.models.watch import latest_checks, scheduled_monitor

    report = scheduled_monitor(settings, "run1")
    assert report == {"run": "run1", "champion": None, "drift": False, "rolled_back": False}
    assert latest_checks(settings, "1d") == []
