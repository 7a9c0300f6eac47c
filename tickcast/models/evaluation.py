"""Honest evaluation: every model and every baseline on the same walk-forward folds.

Per fold, on training rows only: the scaler, the parent on the index, one child per symbol
(initialised from the parent) and one from-scratch model per symbol, for each architecture;
then the baselines. Everything predicts the fold's test rows of the configured symbols that
have a complete feature window, and the pooled out-of-sample predictions are scored by
``metrics.score``. Model names: ``<arch>_<variant>`` (``lstm_child``...), the baselines'
own names, and ``dual`` (both architectures' deployed variant under dual-model confirmation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tickcast.core.intervals import INTERVALS
from tickcast.models import baselines, training
from tickcast.models.confirmation import confirm, signal_classes
from tickcast.models.dataset import Scaler, sequence_windows
from tickcast.models.experiment import ExperimentConfig
from tickcast.models.metrics import Predictions, score
from tickcast.models.networks import ARCHITECTURES
from tickcast.models.splits import Fold, SplitError, walk_forward

log = logging.getLogger(__name__)

# The variant that gets deployed: the children (with the parent for symbols without one), or
# with earnings-day routing the children on normal days and the earnings model on earnings days.
DEPLOYED_VARIANT = "child"
ROUTED_VARIANT = "routed"
# What routes a row: the feature computed from the earnings calendar (tickcast.features.alt).
ROUTE_COLUMN = "earnings_window"


class EvaluationError(ValueError):
    """The data cannot support the evaluation asked for (the message says what is missing)."""


@dataclass
class EvaluationResult:
    config: ExperimentConfig
    metrics: dict[str, dict[str, float | None]]
    folds: list[dict[str, object]]
    fingerprint: str
    predictions: dict[str, Predictions]
    # Per model: its equity curve, confusion matrix and calibration table (for the report).
    extras: dict[str, dict[str, Any]]
    training_seconds: dict[str, float] = field(default_factory=dict)
    # With earnings-day routing: per route ("normal", "earnings"), every model's metrics on
    # that route's test rows alone.
    routes: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)

    def metrics_document(self) -> dict[str, object]:
        """The content of ``metrics.json``."""
        return {
            "experiment": self.config.name,
            "interval": self.config.interval,
            "symbols": self.config.symbols,
            "index": self.config.index,
            "folds_fingerprint": self.fingerprint,
            "folds": self.folds,
            "models": self.metrics,
            "training_seconds": {k: round(v, 3) for k, v in self.training_seconds.items()},
            **({"routes": self.routes} if self.routes else {}),
        }


def deployed_variant(config: ExperimentConfig) -> str:
    variants = config.evaluation.variants
    if config.routing.earnings:
        return ROUTED_VARIANT
    return DEPLOYED_VARIANT if DEPLOYED_VARIANT in variants else variants[0]


def earnings_rows(frame: pd.DataFrame, config: ExperimentConfig) -> np.ndarray | None:
    """Rows routed to the earnings-day model: the configured symbols' bars in their earnings
    window (None without routing)."""
    if not config.routing.earnings:
        return None
    if ROUTE_COLUMN not in frame.columns:
        raise EvaluationError(f"earnings-day routing needs the {ROUTE_COLUMN} of each row, from the earnings "
                              "calendar: collect it first (tickcast altdata collect earnings)")
    return (frame[ROUTE_COLUMN].to_numpy(dtype=float) > 0) & frame["symbol"].isin(config.symbols).to_numpy()


def eligible_rows(frame: pd.DataFrame, config: ExperimentConfig) -> np.ndarray:
    """Rows with a label and a complete, finite feature window: what can be predicted and scored."""
    values = frame[config.features].to_numpy(dtype=float)
    _, ends = sequence_windows(values, frame["symbol"].to_numpy(), config.training.sequence_length)
    eligible = np.zeros(len(frame), dtype=bool)
    eligible[ends] = True
    return eligible & np.isfinite(frame["label"].to_numpy(dtype=float))


def folds_fingerprint(config: ExperimentConfig, folds: list[Fold]) -> str:
    """Identifies the evaluation's folds: same data span, symbols, labels and test blocks."""
    identity = {
        "interval": config.interval,
        "symbols": sorted(config.symbols),
        "index": config.index,
        "labels": config.labels.model_dump(),
        "tests": [(f.test_start.isoformat(), None if pd.isna(f.test_end) else f.test_end.isoformat())
                  for f in folds],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def complete_inputs(frame: pd.DataFrame, config: ExperimentConfig) -> np.ndarray:
    """Rows with a label and every configured feature (or ``evaluation.fold_features``) finite
    in the row itself."""
    names = config.evaluation.fold_features or config.features
    absent = [name for name in names if name not in frame.columns]
    if absent:
        raise EvaluationError(f"the folds are formed over {', '.join(absent)}, which these rows do not have")
    values = frame[names].to_numpy(dtype=float)
    return np.isfinite(values).all(axis=1) & np.isfinite(frame["label"].to_numpy(dtype=float))


def _incomplete_inputs(frame: pd.DataFrame, config: ExperimentConfig) -> str:
    """Why rows lack complete inputs: how many of the symbols' labelled rows have them, and the
    features missing most often."""
    mine = frame["symbol"].isin(config.symbols).to_numpy()
    labelled = mine & np.isfinite(frame["label"].to_numpy(dtype=float))
    complete = int((complete_inputs(frame, config) & mine).sum())
    missing = (~np.isfinite(frame.loc[labelled, config.features].to_numpy(dtype=float))).sum(axis=0)
    worst = [(name, int(n)) for n, name in sorted(zip(missing, config.features, strict=True),
                                                  key=lambda item: -item[0]) if n > 0][:3]
    text = (f"{complete:,} of the {int(labelled.sum()):,} labelled rows of {', '.join(config.symbols)} "
            f"have every feature")
    if worst:
        text += " (missing most often: " + ", ".join(f"{name} in {n:,} rows" for name, n in worst) + ")"
    if any(name.startswith("market_") for name, _ in worst):
        text += (f"; market_* features are null where the index {config.index} has no bars: load its "
                 "history for the span and run `tickcast features backfill`")
    return text


def make_folds(frame: pd.DataFrame, config: ExperimentConfig) -> list[Fold]:
    """Folds over the rows with complete inputs (``complete_inputs``): a span the index's
    history does not cover (null market features) is left out instead of becoming a test block
    with nothing to score. The boundaries depend on the data and the feature list, not on the
    sequence length: which rows a model can score (its full window) is decided afterwards."""
    e = config.evaluation
    complete = complete_inputs(frame, config)
    try:
        folds = walk_forward(frame["window_end"], frame["label_end"].where(complete),
                             folds=e.folds, min_train_fraction=e.min_train_fraction,
                             validation_fraction=config.training.validation_fraction, embargo=e.embargo)
    except SplitError as exc:
        raise EvaluationError(f"the rows with complete inputs cannot make the folds asked for ({exc}): "
                              f"{_incomplete_inputs(frame, config)}") from None
    mine = frame["symbol"].isin(config.symbols).to_numpy()
    for fold in folds:
        if not (fold.test & mine).any():
            raise EvaluationError(f"fold {fold.number} (from {fold.test_start.date()}) has no rows of "
                                  f"{', '.join(config.symbols)} with complete inputs: "
                                  f"{_incomplete_inputs(frame, config)}")
    return folds


def _predictions(model, data: training.TrainingData, rows: np.ndarray) -> Predictions:
    probabilities, quantiles = training.predict(model, data.x)
    return Predictions(rows, probabilities, quantiles)


def _fold_models(frame: pd.DataFrame, config: ExperimentConfig, fold: Fold, data: training.SequenceSet,
                 test_mask: np.ndarray, timings: dict[str, float], say: Callable[[str], None],
                 on_earnings: np.ndarray | None = None) -> dict[str, list[Predictions]]:
    out: dict[str, list[Predictions]] = {}
    symbols = frame["symbol"].to_numpy()
    is_index = symbols == config.index
    scale = training.return_scale(data.forward[fold.train])
    variants = set(config.evaluation.variants)
    for arch in config.evaluation.models:
        parent = None
        if variants & {"parent", "child"}:
            fit = training.fit_new(arch, config, data.select(fold.train & is_index),
                                   data.select(fold.validation & is_index), scale)
            parent = fit.model
            timings[f"{arch}_parent"] = timings.get(f"{arch}_parent", 0.0) + fit.seconds
            say(f"fold {fold.number}: {arch} parent on {config.index}: {fit.epochs} epochs, {fit.seconds:.1f} s")
            if "parent" in variants:
                test_rows = data.rows(test_mask)
                out.setdefault(f"{arch}_parent", []).append(
                    _predictions(parent, data.select(test_mask), test_rows))
        for symbol in config.symbols:
            mine = symbols == symbol
            test = data.select(test_mask & mine)
            test_rows = data.rows(test_mask & mine)
            if "child" in variants:
                fit = training.fit_child(parent, arch, config, data.select(fold.train & mine),
                                         data.select(fold.validation & mine), scale)
                timings[f"{arch}_child"] = timings.get(f"{arch}_child", 0.0) + fit.seconds
                out.setdefault(f"{arch}_child", []).append(_predictions(fit.model, test, test_rows))
            if "scratch" in variants:
                fit = training.fit_new(arch, config, data.select(fold.train & mine),
                                       data.select(fold.validation & mine), scale)
                timings[f"{arch}_scratch"] = timings.get(f"{arch}_scratch", 0.0) + fit.seconds
                out.setdefault(f"{arch}_scratch", []).append(_predictions(fit.model, test, test_rows))
        say(f"fold {fold.number}: {arch} children and from-scratch models for {len(config.symbols)} symbol(s) done")
        if on_earnings is not None and parent is not None and f"{arch}_child" in out:
            out[f"{arch}_{ROUTED_VARIANT}"] = [_routed(arch, config, fold, data, parent, test_mask, on_earnings,
                                                       out[f"{arch}_child"], scale, timings, say)]
    return out


def _routed(arch: str, config: ExperimentConfig, fold: Fold, data: training.SequenceSet, parent,
            test_mask: np.ndarray, on_earnings: np.ndarray, children: list[Predictions], scale: float,
            timings: dict[str, float], say: Callable[[str], None]) -> Predictions:
    """The routed predictions of a fold: the children's on normal days, the earnings model's
    (fine-tuned from the parent on every symbol's earnings-day training rows) on earnings days."""
    fit = training.fit_earnings(parent, arch, config, data.select(fold.train & on_earnings),
                                data.select(fold.validation & on_earnings), scale)
    timings[f"{arch}_earnings"] = timings.get(f"{arch}_earnings", 0.0) + fit.seconds
    say(f"fold {fold.number}: {arch} earnings-day model on {int((fold.train & on_earnings).sum())} rows: "
        f"{fit.epochs} epochs, {fit.seconds:.1f} s")
    test = test_mask & on_earnings
    normal_days = Predictions.concat(children).where(~on_earnings)
    return Predictions.concat([normal_days, _predictions(fit.model, data.select(test), data.rows(test))])


def _fold_baselines(frame: pd.DataFrame, config: ExperimentConfig, fold: Fold, scaler: Scaler,
                    train: np.ndarray, validation: np.ndarray, test_rows: np.ndarray,
                    timings: dict[str, float]) -> dict[str, Predictions]:
    out: dict[str, Predictions] = {}
    seed = config.training.seed
    for name in config.evaluation.baselines:
        started = time.perf_counter()
        if name == "no_change":
            out[name] = baselines.no_change(frame, train, test_rows)
        elif name == "momentum":
            out[name] = baselines.momentum(frame, train, test_rows, config.evaluation.momentum_lookback)
        elif name == "logistic":
            out[name] = baselines.logistic(frame, train, test_rows, config.features, scaler, seed)
        elif name == "lightgbm":
            out[name] = baselines.lightgbm(frame, train, validation, test_rows, config.features, scaler, seed)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
    return out


def _dual(config: ExperimentConfig, pooled: dict[str, Predictions]) -> Predictions | None:
    variant = deployed_variant(config)
    names = [f"{arch}_{variant}" for arch in ARCHITECTURES]
    if not all(n in pooled for n in names):
        return None
    first, second = (pooled[n] for n in names)
    order_a, order_b = np.argsort(first.rows, kind="stable"), np.argsort(second.rows, kind="stable")
    if not np.array_equal(first.rows[order_a], second.rows[order_b]):
        raise EvaluationError("the two architectures predicted different rows")
    pa, pb = first.probabilities[order_a], second.probabilities[order_b]
    signals, _confidence = confirm(pa, pb, config.confirmation.threshold)
    return Predictions(first.rows[order_a], (pa + pb) / 2.0,
                       (first.quantiles[order_a] + second.quantiles[order_b]) / 2.0, signal_classes(signals))


def evaluate_frame(frame: pd.DataFrame, config: ExperimentConfig,
                   say: Callable[[str], None] | None = None) -> EvaluationResult:
    """Walk-forward evaluation of ``frame`` (a ``dataset.labelled_frame`` of the configured
    symbols and the index)."""
    say = say or log.info
    frame = frame.sort_values(["symbol", "window_end"], kind="stable").reset_index(drop=True)
    present = set(frame["symbol"].unique())
    missing = [s for s in [config.index, *config.symbols] if s not in present]
    if missing:
        raise EvaluationError(f"no bars for {', '.join(missing)} between {config.start.date()} and {config.end.date()}")
    training.seed_everything(config.training.seed)
    eligible = eligible_rows(frame, config)
    folds = make_folds(frame, config)
    fingerprint = folds_fingerprint(config, folds)
    is_symbol = frame["symbol"].isin(config.symbols).to_numpy()
    on_earnings = earnings_rows(frame, config)
    collected: dict[str, list[Predictions]] = {}
    timings: dict[str, float] = {}
    described = []
    for fold in folds:
        fold = Fold(fold.number, fold.train & eligible, fold.validation & eligible, fold.test,
                    fold.test_start, fold.test_end)
        test_mask = fold.test & eligible & is_symbol
        if not test_mask.any():
            raise EvaluationError(f"fold {fold.number} has no test rows with a full feature window")
        if not (fold.train & (frame["symbol"] == config.index).to_numpy()).any():
            raise EvaluationError(f"fold {fold.number} has no training rows of the index {config.index}")
        info = fold.describe()
        info["test_rows"] = int(test_mask.sum())
        described.append(info)
        say(f"fold {fold.number}/{len(folds)}: train {info['train_rows']:,} rows, validation "
            f"{info['validation_rows']:,}, test {info['test_rows']:,} from {info['test_start']}")
        scaler = Scaler.fit(frame.loc[fold.train, config.features].to_numpy(dtype=float), config.features)
        data = training.SequenceSet(frame, config.features, config.training.sequence_length, scaler, eligible)
        test_rows = data.rows(test_mask)
        for name, parts in _fold_models(frame, config, fold, data, test_mask, timings, say, on_earnings).items():
            collected.setdefault(name, []).extend(parts)
        for name, part in _fold_baselines(frame, config, fold, scaler, fold.train, fold.validation,
                                          test_rows, timings).items():
            collected.setdefault(name, []).append(part)

    pooled = {name: Predictions.concat(parts) for name, parts in collected.items()}
    dual = _dual(config, pooled)
    if dual is not None:
        pooled["dual"] = dual
    metrics, extras = {}, {}
    for name, predictions in pooled.items():
        metrics[name], extras[name] = score(frame, predictions, cost_bps=config.evaluation.cost_bps,
                                            bars_per_year=INTERVALS[config.interval].bars_per_year)
    routes = {}
    if on_earnings is not None:
        bars_per_year = INTERVALS[config.interval].bars_per_year
        for route, keep in (("normal", ~on_earnings), ("earnings", on_earnings)):
            routes[route] = {name: score(frame, part, cost_bps=config.evaluation.cost_bps, bars_per_year=bars_per_year)[0]
                             for name, predictions in pooled.items() if (part := predictions.where(keep)).rows.size}
    return EvaluationResult(config, metrics, described, fingerprint, pooled, extras, timings, routes)
