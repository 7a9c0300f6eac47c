"""From bars and point-in-time features to model inputs: labelled rows, sequences, scalers.

A *labelled frame* has one row per (symbol, bar): ``symbol``, ``window_end``, the
features, ``label``, ``forward_return``, ``next_return`` (the following bar's return, for
the backtest) and ``label_end``. A row's input is the sequence of its symbol's last
``sequence_length`` feature vectors, ending with its own bar: nothing after ``window_end``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tickcast.models.labels import LabelSpec, label_bars

# Standardised values beyond this many standard deviations are clipped: one freak volume
# ratio must not dominate a batch, and the scorer sees the same clipping.
CLIP_SIGMAS = 10.0


@dataclass
class Scaler:
    """Per-feature standardisation, fit on a training fold only and saved with the model."""

    features: list[str]
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, features: list[str]) -> Scaler:
        values = np.asarray(values, dtype=float)
        if values.ndim != 2 or values.shape[1] != len(features) or values.shape[0] == 0:
            raise ValueError(f"cannot fit a scaler on an array of shape {values.shape}")
        mean = np.nanmean(values, axis=0)
        scale = np.nanstd(values, axis=0)
        # A constant feature (e.g. the SMA cross in a steady trend) carries no spread to divide by.
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        return cls(list(features), mean, scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Standardised float32 values, clipped; works on (..., n_features) arrays."""
        scaled = (np.asarray(values, dtype=float) - self.mean) / self.scale
        return np.clip(scaled, -CLIP_SIGMAS, CLIP_SIGMAS).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"features": self.features, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "clip_sigmas": CLIP_SIGMAS}

    @classmethod
    def from_dict(cls, data: dict) -> Scaler:
        return cls(list(data["features"]), np.asarray(data["mean"], dtype=float),
                   np.asarray(data["scale"], dtype=float))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Scaler:
        return cls.from_dict(json.loads(path.read_text()))


def labelled_frame(bars: pd.DataFrame, features: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """Bars (symbol, window_start, window_end, close) labelled and joined with the feature rows
    (symbol, window_end, features...) that are point-in-time for them."""
    labelled = label_bars(bars[["symbol", "window_start", "window_end", "close"]], spec)
    grouped = labelled.groupby("symbol", sort=False)["close"]
    labelled["next_return"] = grouped.shift(-1) / labelled["close"] - 1.0
    feature_cols = [c for c in features.columns if c not in ("symbol", "window_end", "window_start",
                                                              "interval", "event_timestamp",
                                                              "feature_set_version")]
    joined = labelled.merge(features[["symbol", "window_end", *feature_cols]],
                            on=["symbol", "window_end"], how="left", validate="one_to_one")
    return joined.sort_values(["symbol", "window_end"], kind="stable").reset_index(drop=True)


@dataclass
class Sequences:
    """Inputs for the rows of a frame that have a full, finite feature window."""

    x: np.ndarray  # (n, sequence_length, n_features), float32, scaled
    rows: np.ndarray  # positions in the frame, in frame order

    def __len__(self) -> int:
        return int(self.rows.size)


def sequence_windows(values: np.ndarray, symbols: np.ndarray, length: int, *, complete_only: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``length`` consecutive rows of one symbol whose values are all finite
    (with ``complete_only=False``, missing values too: the scorers leave them to the bundle,
    which scales them to the training mean).

    ``values`` (n, f) is ordered by symbol then time. Returns (windows (m, length, f),
    positions (m,) of each window's last row)."""
    values = np.asarray(values)
    n = values.shape[0]
    if n < length:
        return np.empty((0, length, values.shape[1]), dtype=values.dtype), np.empty(0, dtype=int)
    windows = np.lib.stride_tricks.sliding_window_view(values, length, axis=0)  # (n-L+1, f, L)
    ends = np.arange(length - 1, n)
    same_symbol = symbols[ends] == symbols[ends - length + 1]
    finite_row = np.isfinite(values).all(axis=1)
    # A window is complete when all of its rows are finite: a running count does it in O(n).
    bad = np.concatenate([[0], np.cumsum(~finite_row)])
    complete = (bad[ends + 1] - bad[ends + 1 - length]) == 0
    keep = same_symbol & complete if complete_only else same_symbol
    return np.transpose(windows[keep], (0, 2, 1)), ends[keep]


def build_sequences(frame: pd.DataFrame, features: list[str], length: int, scaler: Scaler,
                    mask: np.ndarray | None = None) -> Sequences:
    """Scaled sequences for the frame's rows (``mask`` selects which rows are wanted as
    sequence ends; their windows may reach back into unselected rows)."""
    scaled = scaler.transform(frame[features].to_numpy(dtype=float))
    # transform clips; NaN stays NaN so incomplete windows are still recognised.
    scaled[~np.isfinite(frame[features].to_numpy(dtype=float))] = np.nan
    x, rows = sequence_windows(scaled, frame["symbol"].to_numpy(), length)
    if mask is not None:
        keep = np.asarray(mask)[rows]
        x, rows = x[keep], rows[keep]
    return Sequences(np.ascontiguousarray(x, dtype=np.float32), rows)
