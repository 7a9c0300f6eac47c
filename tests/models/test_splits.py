"""Walk-forward folds: purge, embargo, validation before test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickcast.models.splits import SplitError, final_split, walk_forward


def _rows(n_times: int = 300, symbols=("AAA", "BBB", "MKT"), horizon: int = 5) -> pd.DataFrame:
    times = pd.date_range("2020-01-01", periods=n_times, freq="D", tz="UTC")
    frames = []
    for symbol in symbols:
        ends = pd.Series(times).shift(-horizon)  # the label looks `horizon` bars ahead
        frames.append(pd.DataFrame({"symbol": symbol, "window_end": times, "label_end": ends.to_numpy()}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("embargo", [0, 3])
@pytest.mark.parametrize("horizon", [1, 5])
def test_no_training_label_window_overlaps_a_test_row(horizon, embargo):
    rows = _rows(horizon=horizon)
    folds = walk_forward(rows.window_end, rows.label_end, folds=4, min_train_fraction=0.4,
                         validation_fraction=0.2, embargo=embargo)
    assert len(folds) == 4
    times = np.sort(rows.window_end.unique())
    for fold in folds:
        test_times = rows.window_end[fold.test]
        first_test = test_times.min()
        for mask in (fold.train, fold.validation):
            # Every label window (window_end, label_end] of a fitting row ends before the test.
            assert (rows.label_end[mask] < first_test).all()
            assert (rows.window_end[mask] < first_test).all()
        # The embargo keeps `embargo` more bars between the last label and the test.
        last_label = rows.label_end[fold.train | fold.validation].max()
        gap = np.searchsorted(times, first_test) - np.searchsorted(times, last_label)
        assert gap >= embargo + 1
        # Validation follows training, purged the same way.
        first_validation = rows.window_end[fold.validation].min()
        assert (rows.label_end[fold.train] < first_validation).all()
        assert not (fold.train & fold.test).any() and not (fold.validation & fold.test).any()
        assert fold.train.any() and fold.validation.any() and fold.test.any()


def test_test_blocks_are_consecutive_and_cover_the_rest():
    rows = _rows()
    folds = walk_forward(rows.window_end, rows.label_end, folds=3, min_train_fraction=0.5,
                         validation_fraction=0.2)
    tested = np.zeros(len(rows), dtype=bool)
    for earlier, later in zip(folds, folds[1:], strict=False):
        assert rows.window_end[earlier.test].max() < rows.window_end[later.test].min()
        assert earlier.test_end == later.test_start
    for fold in folds:
        assert not (tested & fold.test).any()
        tested |= fold.test
    labelled = rows.label_end.notna().to_numpy()
    assert rows.window_end[tested & labelled].min() == folds[0].test_start
    # Training grows: walk-forward trains on everything before each test block.
    sizes = [int(f.train.sum()) for f in folds]
    assert sizes == sorted(sizes)


def test_unlabelled_rows_are_in_no_fold():
    rows = _rows(horizon=5)
    folds = walk_forward(rows.window_end, rows.label_end, folds=2, min_train_fraction=0.5,
                         validation_fraction=0.2)
    unlabelled = rows.label_end.isna().to_numpy()
    for fold in folds:
        assert not ((fold.train | fold.validation | fold.test) & unlabelled).any()


def test_too_little_data_is_a_clear_error():
    rows = _rows(n_times=6, horizon=1)
    with pytest.raises(SplitError, match="cannot make 10 test folds"):
        walk_forward(rows.window_end, rows.label_end, folds=10, min_train_fraction=0.5, validation_fraction=0.2)
    with pytest.raises(SplitError, match="embargo"):
        walk_forward(_rows().window_end, _rows().label_end, folds=2, min_train_fraction=0.1,
                     validation_fraction=0.2, embargo=1000)


def test_final_split_uses_every_label_and_purges_validation():
    rows = _rows(horizon=3)
    train, validation = final_split(rows.window_end, rows.label_end, validation_fraction=0.25)
    labelled = rows.label_end.notna().to_numpy()
    assert not ((train | validation) & ~labelled).any()
    assert (rows.label_end[train] < rows.window_end[validation].min()).all()
    # Only the purge gap (3 bars x 3 symbols) is left out.
    assert labelled.sum() - (train | validation).sum() == 3 * 3


def test_time_units_do_not_matter():
    """Delta hands over microseconds; a label column derived elsewhere may be nanoseconds."""
    rows = _rows(horizon=2)
    micro = rows.window_end.astype("datetime64[us, UTC]")
    mixed = walk_forward(micro, rows.label_end, folds=2, min_train_fraction=0.5, validation_fraction=0.2)
    plain = walk_forward(rows.window_end, rows.label_end, folds=2, min_train_fraction=0.5, validation_fraction=0.2)
    for a, b in zip(mixed, plain, strict=True):
        assert a.test_start == b.test_start and a.test_start.year == 2020
        assert (a.train == b.train).all() and (a.test == b.test).all()
