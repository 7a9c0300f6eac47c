"""Watching the champion after it ships: are its inputs still what it learned from, and do its
predictions still come true? Pure functions over arrays and frames; the `monitor` DAG reads the
tables and writes the verdicts.

- **Drift** of each feature: the population stability index of the live values against the
  champion's training reference (bins at the reference's deciles), and the two-sample
  Kolmogorov-Smirnov test. A feature drifts when PSI >= ``psi_threshold`` *and* the KS p-value
  is below ``ks_pvalue`` (PSI alone flags tiny shifts on huge samples, KS alone flags
  irrelevant ones).
- **Realised performance** of stored predictions, once their horizon has passed: the
  information coefficient (Spearman correlation of predicted and realised returns), the hit
  rate (direction right), and the Brier score of the predicted class probabilities.
- **Rollback**: the champion is rolled back when, for ``persistence`` consecutive checks, its
  realised IC over the window trails the predecessor's realised IC or a baseline's on the same
  outcomes by more than the larger of ``margin`` and ``z`` standard errors of the difference,
  with at least ``min_outcomes`` outcomes behind each figure.
  One bad hour of a noisy market is not a verdict; ``tests/models/test_monitoring.py``
  simulates a long window of plain noise and counts no rollback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PSI_BINS = 10
# Share of a bin below which PSI treats it as this (an empty bin would make PSI infinite).
PSI_FLOOR = 1e-4


def psi(reference: np.ndarray, live: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``live`` against ``reference`` (finite values only), with
    bins at the reference's quantiles: sum((live% - ref%) * ln(live% / ref%))."""
    reference = reference[np.isfinite(reference)]
    live = live[np.isfinite(live)]
    if len(reference) == 0 or len(live) == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    actual = np.bincount(np.searchsorted(edges, live, side="right"), minlength=len(edges) + 1) / len(live)
    expected, actual = np.maximum(expected, PSI_FLOOR), np.maximum(actual, PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_pvalue(reference: np.ndarray, live: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value) of the two samples (finite values only)."""
    from scipy.stats import ks_2samp

    reference, live = reference[np.isfinite(reference)], live[np.isfinite(live)]
    if len(reference) == 0 or len(live) == 0:
        return float("nan"), float("nan")
    result = ks_2samp(reference, live)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks: float
    ks_pvalue: float
    drifted: bool
    reference_rows: int
    live_rows: int


def feature_drift(reference: pd.DataFrame, live: pd.DataFrame, features: list[str], *, psi_threshold: float,
                  ks_pvalue_threshold: float, min_rows: int) -> list[FeatureDrift]:
    """Drift of each feature of ``live`` against ``reference``; a feature with fewer than
    ``min_rows`` live values is reported and never called drifted."""
    out = []
    for name in features:
        ref = reference[name].to_numpy(dtype=float)
        now = live[name].to_numpy(dtype=float)
        value = psi(ref, now)
        stat, pvalue = ks_pvalue(ref, now)
        rows = int(np.isfinite(now).sum())
        drifted = bool(rows >= min_rows and value >= psi_threshold and pvalue < ks_pvalue_threshold)
        out.append(FeatureDrift(name, value, stat, pvalue, drifted, int(np.isfinite(ref).sum()), rows))
    return out


@dataclass(frozen=True)
class Realised:
    outcomes: int
    ic: float
    hit_rate: float
    brier: float | None


def realised(predicted: np.ndarray, actual: np.ndarray, probabilities: np.ndarray | None = None,
             classes: np.ndarray | None = None) -> Realised:
    """IC (Spearman), hit rate and, with ``probabilities`` (n x 3: SELL, HOLD, BUY) and the
    realised ``classes`` (0, 1, 2), the Brier score, over the pairs where both are finite."""
    keep = np.isfinite(predicted) & np.isfinite(actual)
    predicted, actual = predicted[keep], actual[keep]
    n = int(keep.sum())
    if n < 3 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        ic = float("nan")
    else:
        from scipy.stats import rankdata

        ic = float(np.corrcoef(rankdata(predicted), rankdata(actual))[0, 1])
    hits = float(np.mean(np.sign(predicted) == np.sign(actual))) if n else float("nan")
    brier = None
    if probabilities is not None and classes is not None:
        p, c = probabilities[keep], classes[keep].astype(int)
        brier = float(np.mean(np.sum((p - np.eye(p.shape[1])[c]) ** 2, axis=1))) if n else None
    return Realised(n, ic, hits, brier)


@dataclass(frozen=True)
class RollbackPolicy:
    # The champion must trail by more than max(margin, z x the standard error of the difference
    # of the two ICs, ~sqrt(1/n1 + 1/n2)): a gap the sampling noise of a few hundred outcomes
    # makes all the time is not evidence.
    margin: float = 0.02
    z: float = 3.0
    # ... and keep trailing while this many new outcomes arrive: checks re-read overlapping
    # windows (hourly checks of daily outcomes see the same data many times), so persistence is
    # counted in fresh outcomes, not in checks.
    persistence_outcomes: int = 400
    min_outcomes: int = 200

    def threshold(self, champion: Realised, rival: Realised) -> float:
        return max(self.margin, self.z * float(np.sqrt(1.0 / champion.outcomes + 1.0 / rival.outcomes)))


@dataclass
class RollbackState:
    """Since when (in outcomes seen) the champion has trailed; kept between checks."""

    trailing_since: int | None = None
    reasons: list[str] = field(default_factory=list)


def rollback_check(champion: Realised, rivals: dict[str, Realised], policy: RollbackPolicy, state: RollbackState,
                   seen: int) -> tuple[bool, RollbackState]:
    """One check: does the champion trail a rival (its predecessor, a baseline) by more than the
    threshold on enough outcomes? ``seen`` counts every outcome the champion has had so far.
    Rollback once it has trailed at every check while ``policy.persistence_outcomes`` new
    outcomes arrived; a check where it does not resets the streak."""
    if champion.outcomes < policy.min_outcomes or not np.isfinite(champion.ic):
        return False, RollbackState(None, [f"{champion.outcomes} outcomes; need {policy.min_outcomes}"])
    behind = [f"IC {champion.ic:.4f} trails {name}'s {rival.ic:.4f} by more than "
              f"{policy.threshold(champion, rival):.4f} ({champion.outcomes} and {rival.outcomes} outcomes)"
              for name, rival in sorted(rivals.items())
              if rival.outcomes >= policy.min_outcomes and np.isfinite(rival.ic)
              and champion.ic < rival.ic - policy.threshold(champion, rival)]
    if not behind:
        return False, RollbackState(None, [])
    since = seen if state.trailing_since is None else state.trailing_since
    return seen - since >= policy.persistence_outcomes, RollbackState(since, behind)
