"""Calibration of served predictions: each prediction set against its bar's triple-barrier class,
binned; the label compared with a naive reference, the bins with counts worked out by hand, and
the reads from real Delta tables (delta-rs, no Spark)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tickcast.catalog import tables
from tickcast.core.predictions import arrow_schema as prediction_schema
from tickcast.core.settings import Settings
from tickcast.models.calibration import (
    measure,
    realised_classes,
    reliability,
    spec_from_params,
    window,
)
from tickcast.models.labels import DOWN, NEUTRAL, UP, LabelSpec

DAY0 = datetime(2024, 3, 4, tzinfo=UTC)
SPEC = LabelSpec(k=0.5, horizon=1, vol_window=3)
CLOSES = [100.0, 101.0, 99.5, 100.2, 103.0, 102.9, 100.0, 100.4, 104.0, 101.0]


def _bars(symbol: str, closes: list[float]) -> pd.DataFrame:
    starts = [DAY0 + timedelta(days=i) for i in range(len(closes))]
    return pd.DataFrame({"symbol": symbol, "window_start": starts, "window_end": [s + timedelta(days=1) for s in starts],
                         "close": closes})


def _naive_label(closes: list[float], i: int, spec: LabelSpec) -> float:
    """The triple barrier with horizon 1, written out: the next close's log move against k times
    the sample deviation of the last vol_window one-bar log returns."""
    if i < spec.vol_window or i + 1 >= len(closes):
        return math.nan
    moves = [math.log(closes[j] / closes[j - 1]) for j in range(i - spec.vol_window + 1, i + 1)]
    mean = sum(moves) / len(moves)
    sigma = math.sqrt(sum((m - mean) ** 2 for m in moves) / (len(moves) - 1))
    step = math.log(closes[i + 1] / closes[i])
    return UP if step >= spec.k * sigma else DOWN if step <= -spec.k * sigma else NEUTRAL


def _prediction(symbol: str, bar: int, up: float, down: float, minutes_into_bar: int = 20 * 60,
                made_after: int = 1) -> dict:
    stamp = DAY0 + timedelta(days=bar, minutes=minutes_into_bar)
    return {"symbol": symbol, "data_timestamp": stamp, "predicted_at": stamp + timedelta(seconds=made_after),
            "prob_down": down, "prob_neutral": 1.0 - up - down, "prob_up": up}


def test_each_predicted_bar_gets_the_class_of_the_triple_barrier_and_the_last_prediction_counts() -> None:
    bars = _bars("A", CLOSES)
    rows = [
        _prediction("A", 5, up=0.9, down=0.05, made_after=1),
        _prediction("A", 5, up=0.2, down=0.5, made_after=60),  # later during the same bar: this one counts
        _prediction("A", 6, up=0.3, down=0.3),
        _prediction("A", 7, up=0.6, down=0.1, minutes_into_bar=1),
        _prediction("A", 8, up=0.5, down=0.2),
        _prediction("A", 9, up=0.5, down=0.2),  # the last bar: no next close yet
        _prediction("A", 1, up=0.5, down=0.2),  # before a full volatility window
        _prediction("B", 5, up=0.5, down=0.2),  # no bars of B
    ]
    found = realised_classes(pd.DataFrame(rows), bars, SPEC, "1d")
    assert list(found["window_start"]) == [DAY0 + timedelta(days=i) for i in (5, 6, 7, 8)]
    assert list(found["label"]) == [_naive_label(CLOSES, i, SPEC) for i in (5, 6, 7, 8)]
    assert set(found["label"]) >= {UP, DOWN}  # the closes make both kinds of move
    assert list(found["prob_up"]) == [0.2, 0.3, 0.6, 0.5]
    assert realised_classes(pd.DataFrame(rows[:0]), bars, SPEC, "1d").empty


def test_minute_predictions_belong_to_the_minute_bar_they_were_made_in() -> None:
    start = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    bars = pd.DataFrame({"symbol": "A", "window_start": [start + timedelta(minutes=i) for i in range(len(CLOSES))],
                         "close": CLOSES})
    bars["window_end"] = bars["window_start"] + timedelta(minutes=1)
    made = start + timedelta(minutes=6, seconds=59)
    found = realised_classes(pd.DataFrame([{"symbol": "A", "data_timestamp": made, "predicted_at": made,
                                            "prob_down": 0.1, "prob_neutral": 0.3, "prob_up": 0.6}]), bars, SPEC, "1m")
    assert list(found["window_start"]) == [start + timedelta(minutes=6)]
    assert list(found["label"]) == [_naive_label(CLOSES, 6, SPEC)]


def test_reliability_bins_the_up_and_down_probabilities() -> None:
    outcomes = pd.DataFrame({
        "prob_up": [0.05, 0.08, 0.62, 0.68, 0.66, 1.0],
        "prob_down": [0.90, 0.85, 0.10, 0.12, 0.14, 0.0],
        "label": [DOWN, UP, UP, UP, NEUTRAL, UP],
    })
    outcomes["prob_neutral"] = 1.0 - outcomes["prob_up"] - outcomes["prob_down"]
    table = reliability(outcomes)
    up = table[table["class"] == "up"].reset_index(drop=True)
    assert up[["bin_low", "bin_high", "count"]].values.tolist() == [[0.0, 0.1, 2], [0.6, 0.7, 3], [0.9, 1.0, 1]]
    assert up["predicted"].tolist() == pytest.approx([0.065, 1.96 / 3, 1.0])
    assert up["observed"].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    down = table[table["class"] == "down"].reset_index(drop=True)
    # 0.1 sits on the edge of the second bin; 0.85 and 0.90 fall in bins of their own.
    assert down[["bin_low", "count"]].values.tolist() == [[0.0, 1], [0.1, 3], [0.8, 1], [0.9, 1]]
    assert down["observed"].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert reliability(outcomes.iloc[:0]).empty


def test_the_label_rule_comes_from_the_training_runs_params() -> None:
    assert spec_from_params({"labels.k": "0.5", "labels.horizon": "2", "labels.vol_window": "20",
                             "training.epochs": "40"}) == LabelSpec(k=0.5, horizon=2, vol_window=20)
    assert spec_from_params({"labels.k": "0.5"}) is None
    assert spec_from_params({"labels.k": "x", "labels.horizon": "1", "labels.vol_window": "20"}) is None
    assert spec_from_params(None) is None


def test_minute_models_are_measured_over_a_short_window(settings: Settings) -> None:
    assert window(settings, "1d") == timedelta(days=settings.monitor_window_days)
    assert window(settings, "1m") == timedelta(days=2)


def _stored_prediction(row: dict, model_version: str) -> dict:
    out = {name: None for name in prediction_schema().names}
    out.update({"symbol": row["symbol"], "horizon": "1d", "predicted_return": 0.0, "predicted_price": 1.0,
                "p10": -0.01, "p50": 0.0, "p90": 0.01, "signal": "HOLD", "confidence": 0.5,
                "model_name": "tickcast-lstm-1d+tickcast-transformer-1d", "model_version": model_version,
                "route": "normal", "data_timestamp": row["data_timestamp"], "predicted_at": row["predicted_at"],
                "probabilities": {"up": row["prob_up"], "neutral": row["prob_neutral"], "down": row["prob_down"]}})
    return out


def test_measure_reads_one_versions_predictions_and_the_bars_from_delta(settings: Settings) -> None:
    bars = _bars("A", CLOSES)
    bar_rows = [{"symbol": "A", "window_start": r.window_start, "window_end": r.window_end, "open": r.close,
                 "high": r.close, "low": r.close, "close": r.close, "volume": 1.0, "trades": 1}
                for r in bars.itertuples()]
    tables.append_arrow(settings, "bars_1d", pa.Table.from_pylist(bar_rows, schema=tables.arrow_schema("bars_1d")))
    mine = [_prediction("A", i, up=0.1 * i, down=0.05) for i in range(4, 9)]
    other = [_prediction("A", i, up=0.9, down=0.05) for i in range(4, 9)]
    old = [{**_prediction("A", 3, up=0.5, down=0.2), "predicted_at": DAY0 - timedelta(days=30)}]
    stored = ([_stored_prediction(r, "1+1") for r in mine + old] + [_stored_prediction(r, "2+2") for r in other])
    tables.append_arrow(settings, tables.PREDICTIONS, pa.Table.from_pylist(stored, schema=prediction_schema()))

    name = "tickcast-lstm-1d+tickcast-transformer-1d"
    found = measure(settings, "1d", name, "1+1", SPEC, since=DAY0)
    assert (found.predictions, found.outcomes) == (5, 5)
    expected = reliability(realised_classes(pd.DataFrame(mine), bars, SPEC, "1d"))
    pd.testing.assert_frame_equal(found.bins.reset_index(drop=True), expected.reset_index(drop=True))
    labels = np.array([_naive_label(CLOSES, i, SPEC) for i in range(4, 9)])
    up_bins = found.bins[found.bins["class"] == "up"]
    assert up_bins["count"].sum() == 5
    assert up_bins["observed"].mul(up_bins["count"]).sum() == pytest.approx(float((labels == UP).sum()))

    nothing = measure(settings, "1d", name, "3+3", SPEC, since=DAY0)
    assert (nothing.predictions, nothing.outcomes) == (0, 0) and nothing.bins.empty


def test_measure_without_a_predictions_table_finds_nothing(settings: Settings) -> None:
    found = measure(settings, "1d", "x", "1", SPEC, since=DAY0)
    assert (found.predictions, found.outcomes) == (0, 0) and found.bins.empty
