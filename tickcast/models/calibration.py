"""Calibration of served predictions: do the UP and DOWN probabilities the champion published
come true as often as they say?

The walk-forward evaluation measures the same thing out of sample (``metrics.calibration``, the
report's ``calibration.png``); this measures it on what was really served. Each stored
prediction is set against the class its bar got afterwards under the label rule the model was
trained with (``labels.label_bars``: the triple barrier of its experiment's ``labels``), and the
probabilities are binned as the evaluation bins them, so the two plots read alike.

Alignment is the monitor's (``tickcast.models.watch.outcomes``): a prediction belongs to the bar
its ``data_timestamp`` falls in, and of several made during one bar the last counts (what it
said at the close). Bars whose label needs closes that do not exist yet are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tickcast.core.intervals import INTERVALS
from tickcast.models.labels import CLASS_NAMES, DOWN, UP, LabelSpec, label_bars

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

BINS = 10
PROBABILITY_COLUMNS = [f"prob_{name}" for name in CLASS_NAMES]  # down, neutral, up: the label order
# How far back served predictions are read. Minute models publish many predictions per bar, so
# their window is short: two trading days are ~780 bars per symbol, plenty for ten bins.
INTRADAY_WINDOW = timedelta(days=2)


def window(settings: Settings, interval: str) -> timedelta:
    """The span of predictions measured: the monitor's window (``monitor_window_days``) for
    daily bars, ``INTRADAY_WINDOW`` for minute bars."""
    daily = timedelta(days=settings.monitor_window_days)
    return min(daily, INTRADAY_WINDOW) if INTERVALS[interval].intraday else daily


def spec_from_params(params: Mapping[str, str] | None) -> LabelSpec | None:
    """The label rule a training run logged (``labels.k``, ``labels.horizon``,
    ``labels.vol_window``: ``lifecycle`` logs the experiment's config as flat params); None when
    the run recorded none."""
    params = params or {}
    try:
        return LabelSpec(k=float(params["labels.k"]), horizon=int(params["labels.horizon"]),
                         vol_window=int(params["labels.vol_window"]))
    except (KeyError, ValueError):
        return None


def run_spec(client: Any, run_id: str | None) -> LabelSpec | None:
    """The label rule of the MLflow run that trained a version (``client``: an MlflowClient)."""
    return spec_from_params(client.get_run(run_id).data.params) if run_id else None


def realised_classes(predictions: pd.DataFrame, bars: pd.DataFrame, spec: LabelSpec, interval: str) -> pd.DataFrame:
    """One row per (symbol, bar) predicted: the last prediction's ``prob_down``/``prob_neutral``/
    ``prob_up`` and the bar's ``label`` (DOWN, NEUTRAL, UP) under ``spec``; bars not labelled yet
    are left out.

    ``predictions``: symbol, data_timestamp, predicted_at and the probability columns;
    ``bars``: symbol, window_start, window_end, close.
    """
    columns = ["symbol", "window_start", *PROBABILITY_COLUMNS, "label"]
    if predictions.empty or bars.empty:
        return pd.DataFrame(columns=columns)
    width = pd.Timedelta(seconds=INTERVALS[interval].seconds)
    frame = predictions.copy()
    frame["window_start"] = pd.to_datetime(frame["data_timestamp"], utc=True).dt.floor(width)
    frame = frame.sort_values("predicted_at", kind="stable").groupby(["symbol", "window_start"]).tail(1)
    stored = bars[["symbol", "window_start", "window_end", "close"]].copy()
    for column in ("window_start", "window_end"):
        stored[column] = pd.to_datetime(stored[column], utc=True)
    labelled = label_bars(stored.drop_duplicates(["symbol", "window_start"], keep="last"), spec)
    joined = frame.merge(labelled[["symbol", "window_start", "label"]], on=["symbol", "window_start"], how="inner")
    probabilities = joined[PROBABILITY_COLUMNS].to_numpy(dtype=float)
    keep = joined["label"].notna().to_numpy() & np.isfinite(probabilities).all(axis=1)
    return joined.loc[keep, columns].sort_values(["symbol", "window_start"]).reset_index(drop=True)


def reliability(outcomes: pd.DataFrame, bins: int = BINS) -> pd.DataFrame:
    """Per class (``up``, ``down``) and probability bin of width 1/``bins``: the bin's edges,
    the mean predicted probability, the observed frequency of the class and the count."""
    from tickcast.models.metrics import calibration

    columns = ["class", "bin_low", "bin_high", "predicted", "observed", "count"]
    if outcomes.empty:
        return pd.DataFrame(columns=columns)
    probabilities = outcomes[PROBABILITY_COLUMNS].to_numpy(dtype=float)
    labels = outcomes["label"].to_numpy(dtype=int)
    table = calibration(probabilities, labels, bins=bins)
    # The evaluation's binning (metrics.calibration), with each bin's edges put back.
    edges = []
    for cls, name in ((UP, "up"), (DOWN, "down")):
        which = np.minimum((probabilities[:, cls] * bins).astype(int), bins - 1)
        edges += [(name, b / bins, (b + 1) / bins) for b in np.unique(which)]
    table["bin_low"] = [low for _, low, _ in edges]
    table["bin_high"] = [high for _, _, high in edges]
    return table[columns]


@dataclass(frozen=True)
class Calibration:
    """The served predictions of one model version against what happened."""

    model_name: str
    model_version: str
    spec: LabelSpec
    since: datetime
    predictions: int  # rows read (every prediction, several per bar possibly)
    outcomes: int  # (symbol, bar) pairs with a label
    bins: pd.DataFrame  # ``reliability``


def read_predictions(settings: Settings, model_name: str, model_version: str, since: datetime) -> pd.DataFrame:
    """The stored predictions of this version made since ``since``: symbol, data_timestamp,
    predicted_at and the probabilities flattened (empty while the table does not exist)."""
    import pyarrow.dataset as pads

    from tickcast.catalog import tables

    columns = ["symbol", "data_timestamp", "predicted_at", *PROBABILITY_COLUMNS]
    found = tables.dataset(settings, tables.PREDICTIONS)
    if found is None:
        return pd.DataFrame(columns=columns)
    wanted: dict[str, Any] = {name: pads.field(name) for name in columns[:3]}
    wanted |= {f"prob_{name}": pads.field("probabilities", name) for name in CLASS_NAMES}
    where = ((pads.field("model_name") == model_name) & (pads.field("model_version") == model_version)
             & (pads.field("predicted_at") >= since))
    return found.to_table(columns=wanted, filter=where).to_pandas()


def measure(settings: Settings, interval: str, model_name: str, model_version: str, spec: LabelSpec,
            since: datetime) -> Calibration:
    """Calibration of the predictions ``model_name`` ``model_version`` made since ``since`` on
    bars of ``interval``, against the bars stored since (``LifecycleError`` when there is no bar
    table)."""
    from tickcast.models.lifecycle import read_bars

    served = read_predictions(settings, model_name, model_version, since)
    outcomes = pd.DataFrame()
    if not served.empty:
        first = pd.to_datetime(served["data_timestamp"], utc=True).min()
        # The label's volatility needs vol_window bars before the first predicted bar: calendar
        # days enough for that many trading days, or for minute bars the sessions before a weekend.
        lead = (pd.Timedelta(days=4) if INTERVALS[interval].intraday
                else pd.Timedelta(days=2 * (spec.vol_window + 2) + 7))
        bars = read_bars(settings, sorted(served["symbol"].unique()), interval, first - lead,
                         pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1))
        outcomes = realised_classes(served, bars, spec, interval)
    return Calibration(model_name, model_version, spec, since, len(served), len(outcomes), reliability(outcomes))
