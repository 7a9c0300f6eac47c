"""Batch scoring of stored history (tickcast.scoring.backtest): each bar's prediction is the one
scoring the symbol's latest sequence gives when that bar is the newest (``build_batch``, the
live and on-demand path), for every bar at once."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from tickcast.features.compute import compute_features
from tickcast.models.bundle import ModelBundle
from tickcast.models.untrained import quick_bundles
from tickcast.scoring.backtest import WINDOW_START, history_batch, score_history
from tickcast.scoring.models import DeployedModel, DualModel
from tickcast.scoring.score import build_batch, score

FEATURES = ["return_1d", "return_5d", "rsi_14", "market_return"]
LENGTH = 3
PREDICTED_AT = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def dual(tmp_path_factory) -> DualModel:
    paths = quick_bundles(tmp_path_factory.mktemp("backtest"), features=FEATURES, sequence_length=LENGTH)
    deployed = {arch: DeployedModel(f"tickcast-{arch}-1d", "1", ModelBundle(path)) for arch, path in paths.items()}
    return DualModel(deployed["lstm"], deployed["transformer"], threshold=0.4, horizon="1d")


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    starts = pd.bdate_range("2024-01-02", periods=12, tz="UTC")
    rows = []
    for symbol, base in {"AAA": 50.0, "BBB": 20.0, "MKT": 4000.0}.items():
        close = base * np.exp(np.cumsum(rng.normal(0, 0.01, len(starts))))
        for ws, c in zip(starts, close, strict=True):
            rows.append({"symbol": symbol, "window_start": ws, "window_end": ws + pd.Timedelta(days=1),
                         "open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1000.0,
                         "close_ts": ws + pd.Timedelta(hours=20, minutes=59, seconds=59)})
    bars = pd.DataFrame(rows)
    bars = bars[~((bars["symbol"] == "BBB") & (bars["window_start"] == starts[0]))]  # BBB starts a day later
    features = compute_features(bars, "1d", bars[bars["symbol"] == "MKT"])
    return bars, features


def test_each_bar_is_scored_as_if_it_were_the_newest(dual: DualModel, market) -> None:
    bars, features = market
    frame = score_history(dual, features, bars, predicted_at=PREDICTED_AT)
    # Every bar with LENGTH feature rows up to it: 12 - 2 for AAA and MKT, 11 - 2 for BBB.
    assert frame.groupby("symbol").size().to_dict() == {"AAA": 10, "BBB": 9, "MKT": 10}
    for ws in sorted(frame[WINDOW_START].unique()):
        upto = features[features["window_start"] <= ws]
        batch, _ = build_batch(upto, bars, dual.features, dual.sequence_length)
        expected = score(dual, batch, predicted_at=PREDICTED_AT).set_index("symbol")
        got = frame[frame[WINDOW_START] == ws].drop(columns=WINDOW_START).set_index("symbol")
        expected = expected.loc[got.index]
        pd.testing.assert_frame_equal(got, expected, rtol=1e-9, check_dtype=False)
        assert (got["data_timestamp"] == bars.set_index(["symbol", "window_start"]).loc[
            [(s, ws) for s in got.index], "close_ts"].to_numpy()).all()


def test_missing_features_are_kept_as_live_keeps_them_and_bars_without_a_close_are_left_out(dual, market) -> None:
    bars, features = market
    # rsi_14 is NaN throughout 12 bars: scored all the same (the bundle scales NaN to the mean).
    assert features["rsi_14"].isna().all()
    no_close = bars.copy()
    last = no_close["window_start"].max()
    no_close.loc[(no_close["symbol"] == "AAA") & (no_close["window_start"] == last), "close"] = np.nan
    batch, starts = history_batch(features, no_close, dual.features, dual.sequence_length)
    scored = set(zip(batch.symbols, starts, strict=True))
    assert ("AAA", last) not in scored and ("BBB", last) in scored
    assert np.isnan(batch.raw[:, :, dual.features.index("rsi_14")]).all()


def test_a_range_scores_only_its_bars_with_sequences_reaching_back_before_it(dual, market) -> None:
    bars, features = market
    days = sorted(bars["window_start"].unique())
    frame = score_history(dual, features, bars, start=days[5].to_pydatetime(), end=days[6].to_pydatetime(),
                          predicted_at=PREDICTED_AT)
    assert sorted(frame[WINDOW_START].unique()) == days[5:7]
    whole = score_history(dual, features, bars, predicted_at=PREDICTED_AT)
    pd.testing.assert_frame_equal(
        frame.sort_values(["symbol", WINDOW_START]).reset_index(drop=True),
        whole[whole[WINDOW_START].isin(days[5:7])].sort_values(["symbol", WINDOW_START]).reset_index(drop=True))


def test_features_the_models_do_not_know_are_refused(dual, market) -> None:
    bars, features = market
    with pytest.raises(ValueError, match="rsi_14"):
        history_batch(features.drop(columns="rsi_14"), bars, dual.features, dual.sequence_length)
