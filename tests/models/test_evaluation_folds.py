"""Evaluation folds are formed over the rows with complete inputs: a stock whose index history
starts late gets its folds inside the covered span instead of an empty test block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickcast.models.evaluation import EvaluationError, complete_inputs, folds_fingerprint, make_folds
from tickcast.models.experiment import ExperimentConfig
from tickcast.models.splits import walk_forward

FEATURES = ["return_1d", "market_beta", "market_return"]


def _config(**changes) -> ExperimentConfig:
    return ExperimentConfig(name="folds", symbols=["AAA", "BBB"], index="MKT", start="2020-01-01",
                            end="2022-01-01", features=FEATURES, **changes)


def _frame(n_times: int = 400, index_from: int = 0, horizon: int = 5) -> pd.DataFrame:
    """Labelled rows of AAA, BBB and MKT; the market features are null before bar ``index_from``
    (the index's history starts there)."""
    rng = np.random.default_rng(7)
    times = pd.date_range("2020-01-01", periods=n_times, freq="D", tz="UTC")
    frames = []
    for symbol in ("AAA", "BBB", "MKT"):
        frame = pd.DataFrame({"symbol": symbol, "window_end": times,
                              "label_end": pd.Series(times).shift(-horizon).to_numpy()})
        frame["label"] = np.where(frame["label_end"].notna(), rng.integers(0, 3, n_times), np.nan)
        frame["return_1d"] = rng.normal(0, 0.01, n_times)
        frame.loc[0, "return_1d"] = np.nan  # the first bar has no return
        for name in ("market_beta", "market_return"):
            frame[name] = rng.normal(0, 1, n_times)
            frame.loc[: index_from - 1, name] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_folds_are_formed_inside_the_span_the_index_covers():
    frame = _frame(index_from=250)  # the index's history covers only the last bars
    config = _config()
    complete = complete_inputs(frame, config)
    # Folds over every labelled row would test a block without a single complete row.
    naive = walk_forward(frame["window_end"], frame["label_end"], folds=4, min_train_fraction=0.4,
                         validation_fraction=0.2)
    assert not (naive[0].test & complete).any()
    folds = make_folds(frame, config)
    assert len(folds) == config.evaluation.folds
    covered_from = frame.loc[complete, "window_end"].min()
    assert covered_from == frame["window_end"].iloc[250]
    mine = frame["symbol"].isin(config.symbols).to_numpy()
    for fold in folds:
        assert fold.test_start > covered_from
        # Every mask holds only rows with complete inputs, and every test block rows to score.
        for mask in (fold.train, fold.validation, fold.test):
            assert not (mask & ~complete).any()
        assert (fold.test & mine).any() and fold.train.any() and fold.validation.any()


def test_the_fingerprint_is_stable_for_identical_data_and_ignores_the_sequence_length():
    config = _config()
    first = make_folds(_frame(index_from=200), config)
    again = make_folds(_frame(index_from=200), config)
    longer = make_folds(_frame(index_from=200), _config(training={"sequence_length": 60}))
    assert folds_fingerprint(config, first) == folds_fingerprint(config, again) == folds_fingerprint(config, longer)
    assert [f.test_start for f in first] == [f.test_start for f in longer]
    # A fully covered span gives other folds (and so another fingerprint).
    assert folds_fingerprint(config, make_folds(_frame(index_from=0), config)) != folds_fingerprint(config, first)


def test_nothing_to_test_is_an_error_naming_the_cause():
    frame = _frame(index_from=398)  # the index's bars arrive after the last label
    with pytest.raises(EvaluationError) as failed:
        make_folds(frame, _config())
    message = str(failed.value)
    assert "0 of the 790 labelled rows of AAA, BBB have every feature" in message
    assert "market_beta in 790 rows" in message and "market_return in 790 rows" in message
    assert "index MKT has no bars" in message and "tickcast features backfill" in message


def test_fold_features_let_a_champion_with_other_features_be_evaluated_on_the_challengers_folds():
    """Promotion evaluates a champion again on the challenger's folds: a champion trained on
    return_1d alone is complete over the whole span, the challenger (with market features) only
    where the index is, so the champion's folds are formed over the challenger's features."""
    frame = _frame(index_from=250)
    challenger = _config()
    champion = _config().with_overrides(features=["return_1d"])
    theirs = make_folds(frame, champion)
    mine = make_folds(frame, challenger)
    assert folds_fingerprint(champion, theirs) != folds_fingerprint(challenger, mine)
    again = champion.with_overrides(evaluation={**champion.evaluation.model_dump(), "fold_features": FEATURES})
    assert folds_fingerprint(again, make_folds(frame, again)) == folds_fingerprint(challenger, mine)
    with pytest.raises(EvaluationError, match="market_level"):
        make_folds(frame, champion.with_overrides(
            evaluation={**champion.evaluation.model_dump(), "fold_features": ["market_level"]}))
