"""Chronological walk-forward folds with purge and embargo.

The span's distinct bar times are split into a first training share and ``folds``
consecutive test blocks. Fold i trains on everything before its test block, never after.

*Purge*: a training row's label looks ``horizon`` bars ahead, up to its ``label_end``. A row
whose label window reaches the test block would carry test-period prices into training,
so training keeps only rows with ``label_end`` strictly before the first test bar.

*Embargo*: ``embargo`` more bars are dropped before that cut, for serial correlation that
outlives the label window (set it to the slowest feature's memory to be strict).

The last ``validation_fraction`` of each training span becomes the validation slice
(early stopping, LightGBM's stopping), purged and embargoed from the rest in the same way:
validation always precedes the test fold and never overlaps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


class SplitError(ValueError):
    """Too little data for the folds asked for."""


@dataclass(frozen=True)
class Fold:
    number: int
    train: np.ndarray  # boolean masks over the frame's rows
    validation: np.ndarray
    test: np.ndarray
    test_start: pd.Timestamp
    test_end: pd.Timestamp  # exclusive; NaT for the last fold (to the end)

    def describe(self) -> dict[str, object]:
        return {
            "fold": self.number,
            "train_rows": int(self.train.sum()),
            "validation_rows": int(self.validation.sum()),
            "test_rows": int(self.test.sum()),
            "test_start": self.test_start.isoformat(),
            "test_end": None if pd.isna(self.test_end) else self.test_end.isoformat(),
        }


def _utc_ns(values: pd.Series) -> pd.Series:
    """UTC timestamps in nanoseconds: Arrow and Delta hand over microseconds, and integer
    comparisons between columns of different units would be silently wrong."""
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]").reset_index(drop=True)


def walk_forward(
    times: pd.Series,
    label_ends: pd.Series,
    *,
    folds: int,
    min_train_fraction: float,
    validation_fraction: float,
    embargo: int = 0,
) -> list[Fold]:
    """Folds over rows with bar times ``times`` (window_end) and label horizons ``label_ends``.

    Rows without a label (``label_ends`` NaT) are in no mask.
    """
    times, label_ends = _utc_ns(times), _utc_ns(label_ends)
    labelled = label_ends.notna().to_numpy()
    # Integer nanoseconds: exact comparisons, no timezone or NaT semantics in the masks.
    t = times.array.asi8
    ends = label_ends.array.asi8
    grid = np.unique(t[labelled])
    n = grid.size
    first_test = int(np.floor(n * min_train_fraction))
    if folds < 1 or n - first_test < folds:
        raise SplitError(f"{n} labelled bar times cannot make {folds} test folds after a "
                         f"{min_train_fraction:.0%} training share")
    bounds = np.linspace(first_test, n, folds + 1).round().astype(int)

    result = []
    for number, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), start=1):
        test = labelled & (t >= grid[a]) & ((t < grid[b]) if b < n else True)
        cut = a - embargo
        if cut <= 0:
            raise SplitError(f"fold {number}: the embargo of {embargo} bars leaves no training data")
        try:
            train, validation = _train_validation(t, ends, labelled, grid, grid[cut], validation_fraction, embargo)
        except SplitError as exc:
            raise SplitError(f"fold {number}: {exc}") from None
        result.append(Fold(
            number=number, train=train, validation=validation, test=test,
            test_start=pd.Timestamp(grid[a], tz='UTC'),
            test_end=pd.Timestamp(grid[b], tz='UTC') if b < n else pd.NaT,
        ))
    return result


def _train_validation(t: np.ndarray, ends: np.ndarray, labelled: np.ndarray, grid: np.ndarray, cut: int,
                      validation_fraction: float, embargo: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose labels end before ``cut`` (ns), split into training and a later validation slice."""
    usable = labelled & (ends < cut)
    usable_times = np.unique(t[usable])
    if usable_times.size < 2:
        raise SplitError(f"no training rows survive the purge of labels reaching "
                         f"{pd.Timestamp(cut, tz='UTC').isoformat()}")
    v_index = int(np.floor(usable_times.size * (1.0 - validation_fraction)))
    v_index = min(max(v_index, 1), usable_times.size - 1)
    v_start = usable_times[v_index]
    validation = usable & (t >= v_start)
    # The same purge and embargo between the training rows and the validation slice.
    v_pos = int(np.searchsorted(grid, v_start))
    v_cut = grid[max(v_pos - embargo, 0)]
    train = usable & (t < v_start) & (ends < v_cut)
    if not train.any():
        raise SplitError("no training rows before the validation slice")
    return train, validation


def final_split(times: pd.Series, label_ends: pd.Series, *, validation_fraction: float,
                embargo: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) masks over every labelled row, for the model that gets deployed."""
    times, label_ends = _utc_ns(times), _utc_ns(label_ends)
    labelled = label_ends.notna().to_numpy()
    t, ends = times.array.asi8, label_ends.array.asi8
    grid = np.unique(t[labelled])
    if grid.size < 2:
        raise SplitError("fewer than two labelled bar times: nothing to train on")
    # Past the last label: every labelled row is usable.
    beyond = int(ends[labelled].max()) + 1
    return _train_validation(t, ends, labelled, grid, beyond, validation_fraction, embargo)
