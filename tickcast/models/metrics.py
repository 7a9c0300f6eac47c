"""How a model's out-of-sample predictions are scored, the same way for models and baselines.

Every predictor hands over, per test row, class probabilities (down, neutral, up), a
predicted class, the p10/p50/p90 of the forward return and an expected return (p50). IC
is the Pearson correlation of the expected return with the realised forward return, rank
IC the Spearman correlation, both pooled over every symbol and date of the test folds. A
predictor that says the same thing for every row has no IC (``None``): it ranks nothing.

The backtest holds, each bar and for each symbol, +1 on UP, -1 on DOWN and 0 on NEUTRAL
for one bar (``next_return``), equally weighted across the symbols of that bar, and pays
``cost_bps`` per unit of position change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from tickcast.models.labels import DOWN, NEUTRAL, UP


@dataclass
class Predictions:
    """One predictor's out-of-sample output, aligned with ``rows`` of the labelled frame."""

    rows: np.ndarray
    probabilities: np.ndarray  # (n, 3): down, neutral, up
    quantiles: np.ndarray  # (n, 3): p10, p50, p90
    # Default: the most probable class.
    predicted_class: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=int)
        self.probabilities = np.asarray(self.probabilities, dtype=float)
        self.quantiles = np.asarray(self.quantiles, dtype=float)
        if self.predicted_class is None:
            self.predicted_class = self.probabilities.argmax(axis=1)
        self.predicted_class = np.asarray(self.predicted_class, dtype=int)

    @property
    def expected_return(self) -> np.ndarray:
        return self.quantiles[:, 1]

    def where(self, keep: np.ndarray) -> Predictions:
        """The predictions of the rows where ``keep`` (a mask over the labelled frame) is true."""
        mine = np.asarray(keep, dtype=bool)[self.rows]
        return Predictions(self.rows[mine], self.probabilities[mine], self.quantiles[mine], self.predicted_class[mine])

    @staticmethod
    def concat(parts: list[Predictions]) -> Predictions:
        return Predictions(
            rows=np.concatenate([p.rows for p in parts]),
            probabilities=np.concatenate([p.probabilities for p in parts]),
            quantiles=np.concatenate([p.quantiles for p in parts]),
            predicted_class=np.concatenate([p.predicted_class for p in parts]),
        )


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def correlation(a: np.ndarray, b: np.ndarray, *, rank: bool = False) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    value = stats.spearmanr(a, b).statistic if rank else np.corrcoef(a, b)[0, 1]
    return _finite_or_none(value)


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.eye(3)[labels.astype(int)]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def backtest(frame: pd.DataFrame, positions: np.ndarray, *, cost_bps: float,
             bars_per_year: int) -> dict[str, Any]:
    """Equal-weight long/short of ``positions`` (per frame row) held for one bar each."""
    book = pd.DataFrame({
        "symbol": frame["symbol"].to_numpy(),
        "time": frame["window_end"].to_numpy(),
        "position": positions.astype(float),
        "next_return": frame["next_return"].to_numpy(dtype=float),
    })
    book = book[np.isfinite(book["next_return"])].sort_values(["symbol", "time"], kind="stable")
    if book.empty:
        return {"annual_return": None, "sharpe": None, "max_drawdown": None, "turnover": None,
                "equity": pd.Series(dtype=float)}
    # Position changes per symbol; the first bar of each symbol's test rows opens from flat.
    book["trade"] = book.groupby("symbol")["position"].diff().fillna(book["position"]).abs()
    book["pnl"] = book["position"] * book["next_return"] - book["trade"] * cost_bps / 1e4
    per_bar = book.groupby("time").agg(pnl=("pnl", "mean"), turnover=("trade", "mean")).sort_index()
    returns = per_bar["pnl"]
    equity = (1.0 + returns).cumprod()
    drawdown = float((equity / equity.cummax() - 1.0).min())
    sd = returns.std(ddof=1)
    sharpe = returns.mean() / sd * math.sqrt(bars_per_year) if returns.size > 1 and sd > 0 else float("nan")
    return {
        "annual_return": _finite_or_none(returns.mean() * bars_per_year),
        "sharpe": _finite_or_none(sharpe),
        "max_drawdown": _finite_or_none(drawdown),
        "turnover": _finite_or_none(per_bar["turnover"].mean()),
        "equity": equity,
    }


def positions_from_classes(classes: np.ndarray) -> np.ndarray:
    return np.select([classes == UP, classes == DOWN], [1.0, -1.0], 0.0)


def score(frame: pd.DataFrame, predictions: Predictions, *, cost_bps: float,
          bars_per_year: int) -> tuple[dict[str, float | None], dict[str, object]]:
    """(metrics for metrics.json, extras for the report: equity curve, confusion matrix)."""
    rows = predictions.rows
    labels = frame["label"].to_numpy()[rows].astype(int)
    forward = frame["forward_return"].to_numpy(dtype=float)[rows]
    predicted = predictions.predicted_class
    p10, p50, p90 = predictions.quantiles.T
    f1 = f1_score(labels, predicted, labels=[DOWN, NEUTRAL, UP], average=None, zero_division=0)
    trades = backtest(frame.iloc[rows], positions_from_classes(predicted),
                      cost_bps=cost_bps, bars_per_year=bars_per_year)
    metrics: dict[str, float | None] = {
        "rows": int(rows.size),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(np.mean(f1)),
        "f1_up": float(f1[UP]),
        "f1_down": float(f1[DOWN]),
        "ic": correlation(p50, forward),
        "rank_ic": correlation(p50, forward, rank=True),
        "mae": float(np.mean(np.abs(p50 - forward))),
        "coverage": float(np.mean((forward >= p10) & (forward <= p90))),
        "brier": brier_score(predictions.probabilities, labels),
        "annual_return": trades["annual_return"],
        "sharpe": trades["sharpe"],
        "max_drawdown": trades["max_drawdown"],
        "turnover": trades["turnover"],
    }
    confusion = pd.crosstab(pd.Series(labels, name="actual"), pd.Series(predicted, name="predicted"))
    confusion = confusion.reindex(index=[DOWN, NEUTRAL, UP], columns=[DOWN, NEUTRAL, UP], fill_value=0)
    extras: dict[str, object] = {"equity": trades["equity"], "confusion": confusion.to_numpy(),
              "calibration": calibration(predictions.probabilities, labels)}
    return metrics, extras


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Reliability of the UP and DOWN probabilities: mean predicted vs observed frequency per bin."""
    out = []
    for cls, name in ((UP, "up"), (DOWN, "down")):
        p = probabilities[:, cls]
        hit = (labels == cls).astype(float)
        which = np.minimum((p * bins).astype(int), bins - 1)
        for b in np.unique(which):
            sel = which == b
            out.append({"class": name, "predicted": float(p[sel].mean()),
                        "observed": float(hit[sel].mean()), "count": int(sel.sum())})
    return pd.DataFrame(out)
