"""Drift, realised performance and the rollback rule: a planted drift is found, a planted decay
rolls back, and plain noise over a long simulated window never does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickcast.models.monitoring import (
    Realised,
    RollbackPolicy,
    RollbackState,
    feature_drift,
    ks_pvalue,
    psi,
    realised,
    rollback_check,
)


def test_psi_is_zero_on_the_same_distribution_and_large_on_a_shifted_one() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 5_000)
    assert psi(reference, rng.normal(0, 1, 2_000)) < 0.02
    assert psi(reference, rng.normal(1, 1, 2_000)) > 0.5
    assert psi(reference, np.full(100, np.nan)) != psi(reference, np.full(100, np.nan))  # nan: nothing to compare
    statistic, pvalue = ks_pvalue(reference, rng.normal(1, 1, 2_000))
    assert statistic > 0.3 and pvalue < 1e-10


def test_only_the_planted_feature_drifts() -> None:
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"a": rng.normal(0, 1, 3_000), "b": rng.uniform(0, 100, 3_000)})
    live = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.uniform(30, 130, 500)})
    found = {d.feature: d for d in feature_drift(reference, live, ["a", "b"], psi_threshold=0.25,
                                                   ks_pvalue_threshold=0.01, min_rows=100)}
    assert not found["a"].drifted and found["b"].drifted
    assert found["b"].psi > 0.25 and found["b"].live_rows == 500
    few = feature_drift(reference, live.head(50), ["b"], psi_threshold=0.25, ks_pvalue_threshold=0.01, min_rows=100)
    assert not few[0].drifted  # too few live rows to call it


def test_realised_measures_ic_hits_and_brier() -> None:
    predicted = np.array([0.01, -0.02, 0.03, -0.01, 0.02, np.nan])
    actual = np.array([0.02, -0.01, 0.05, 0.01, 0.00, 0.03])
    probabilities = np.array([[0.1, 0.2, 0.7], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1],
                              [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    classes = np.array([2, 0, 2, 1, 1, 2])
    got = realised(predicted, actual, probabilities, classes)
    assert got.outcomes == 5
    assert got.ic == pytest.approx(pd.Series(predicted[:5]).corr(pd.Series(actual[:5]), method="spearman"))
    assert got.hit_rate == pytest.approx(3 / 5)
    expected_brier = np.mean([((probabilities[i] - np.eye(3)[classes[i]]) ** 2).sum() for i in range(5)])
    assert got.brier == pytest.approx(expected_brier)


def _window(rng: np.random.Generator, n: int, skill: float) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of a model whose IC is about ``skill`` against ``n`` realised returns."""
    actual = rng.normal(0, 0.02, n)
    noise = rng.normal(0, 0.02, n)
    return skill * actual + np.sqrt(1 - skill**2) * noise, actual


def _simulate(rng: np.random.Generator, checks: int, champion_skill, baseline_skill: float,
              outcomes_per_check: int = 40, window: int = 600, policy: RollbackPolicy | None = None) -> list[int]:
    """Hourly checks over a rolling window of outcomes (20 symbols, 2 new outcomes each per
    check); returns the checks at which the rule rolled back."""
    policy = policy or RollbackPolicy()
    champion_p, baseline_p, actual = [], [], []
    state, rolled = RollbackState(), []
    for check in range(checks):
        skill = champion_skill(check) if callable(champion_skill) else champion_skill
        a = rng.normal(0, 0.02, outcomes_per_check)
        champion_p.append(skill * a + np.sqrt(1 - skill**2) * rng.normal(0, 0.02, outcomes_per_check))
        baseline_p.append(baseline_skill * a + np.sqrt(1 - baseline_skill**2) * rng.normal(0, 0.02, outcomes_per_check))
        actual.append(a)
        c, b, y = (np.concatenate(x)[-window:] for x in (champion_p, baseline_p, actual))
        back, state = rollback_check(realised(c, y), {"baseline momentum": realised(b, y)}, policy, state,
                                     seen=(check + 1) * outcomes_per_check)
        if back:
            rolled.append(check)
            state = RollbackState()
    return rolled


def test_plain_noise_never_rolls_back_over_a_long_window() -> None:
    """A champion and a baseline that are both noise, checked hourly for 2,000 hours (about a
    year of trading hours): their realised ICs cross back and forth all the time, and the rule
    must never call it."""
    rng = np.random.default_rng(7)
    assert _simulate(rng, 2_000, 0.0, 0.0) == []
    # Both with the same modest skill, and a champion slightly worse than the baseline: no verdict either.
    assert _simulate(rng, 1_000, 0.05, 0.05) == []
    assert _simulate(rng, 1_000, 0.03, 0.05) == []


def test_a_champion_that_stops_working_is_rolled_back_soon_after() -> None:
    rng = np.random.default_rng(8)
    decay_at = 300
    rolled = _simulate(rng, 600, lambda check: 0.3 if check < decay_at else 0.0, 0.3)
    assert rolled, "the decayed champion was never rolled back"
    # Not before the decay; within the time the window needs to fill with decayed outcomes and
    # the persistence's 400 fresh outcomes (10 checks) to pass.
    assert decay_at < rolled[0] <= decay_at + 600 // 40 + 400 // 40 + 5


def test_the_rule_needs_enough_outcomes_and_persistence_in_fresh_outcomes() -> None:
    policy = RollbackPolicy(margin=0.02, z=3.0, persistence_outcomes=400, min_outcomes=200)
    bad, good = Realised(1_000, -0.2, 0.4, None), Realised(1_000, 0.2, 0.6, None)
    state = RollbackState()
    verdicts = []
    # The same window read again and again (no new outcomes) is not persistence.
    for seen in (1_000, 1_000, 1_000, 1_200, 1_399, 1_400):
        back, state = rollback_check(bad, {"predecessor": good}, policy, state, seen)
        verdicts.append(back)
    assert verdicts == [False, False, False, False, False, True] and "trails predecessor" in state.reasons[0]
    back, state = rollback_check(Realised(150, -0.5, 0.3, None), {"predecessor": good}, policy,
                                 RollbackState(1_000), 2_000)
    assert not back and state.trailing_since is None and "need 200" in state.reasons[0]
    back, state = rollback_check(good, {"predecessor": bad}, policy, RollbackState(1_000), 2_000)
    assert not back and state.trailing_since is None
