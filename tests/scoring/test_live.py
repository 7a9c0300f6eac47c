"""The live scorer's state and cycle (tickcast.scoring.live): it keeps what the stream would
store, folds bars as the stream does, and scores what the one feature implementation and the
dual model give on the same bars. Spark's own transforms and Delta are the references."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from tests.live_ticks import TODAY, TOLERANCE_US, tick, us
from tickcast.catalog import tables
from tickcast.core.featureset import feature_names
from tickcast.features.compute import compute_features
from tickcast.models.bundle import ModelBundle
from tickcast.models.untrained import quick_bundles
from tickcast.scoring.live import LiveMarket, score_cycle, score_stale
from tickcast.scoring.live_job import HistoryWriter
from tickcast.scoring.models import DeployedModel, DualModel
from tickcast.scoring.score import build_batch, score

FEATURES = ["return_1d", "return_5d", "rsi_14", "volatility_5d", "market_return"]
LENGTH = 4


# -- scoring ---------------------------------------------------------------------------------------


def _history(symbols: dict[str, float], days: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    starts = pd.bdate_range(end=TODAY - pd.Timedelta(days=1), periods=days, tz="UTC")
    rows = []
    for symbol, base in symbols.items():
        close = base * np.exp(np.cumsum(rng.normal(0, 0.01, days)))
        for ws, c in zip(starts, close, strict=True):
            rows.append({"symbol": symbol, "window_start": ws, "window_end": ws + pd.Timedelta(days=1),
                         "open": c * 0.999, "high": c * 1.01, "low": c * 0.99, "close": c,
                         "volume": float(rng.integers(1_000, 5_000)), "trades": 40,
                         "open_ts": ws + pd.Timedelta(hours=14, minutes=30), "close_ts": ws + pd.Timedelta(hours=21)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def dual(tmp_path_factory) -> DualModel:
    paths = quick_bundles(tmp_path_factory.mktemp("live"), features=FEATURES, sequence_length=LENGTH,
                          children=("AAA",))
    deployed = {arch: DeployedModel(f"tickcast-{arch}-1d", "3", ModelBundle(path)) for arch, path in paths.items()}
    return DualModel(deployed["lstm"], deployed["transformer"], threshold=0.4, horizon="1d")


def _reference(bars: pd.DataFrame, dual: DualModel, predicted_at: datetime) -> pd.DataFrame:
    """What a full recomputation gives: every feature from all the bars, then the models."""
    features = compute_features(bars, "1d", bars[bars["symbol"] == "MKT"])
    latest = bars.sort_values("window_start").groupby("symbol").tail(1)
    batch, _ = build_batch(features, latest, dual.features, dual.sequence_length)
    return score(dual, batch, predicted_at=predicted_at).sort_values("symbol").reset_index(drop=True)


def _loaded(history: pd.DataFrame, now: pd.Timestamp) -> LiveMarket:
    market = LiveMarket("1d", late_tolerance_us=TOLERANCE_US)
    stored = compute_features(history, "1d", history[history["symbol"] == "MKT"])
    market.load(history, stored[market.feature_columns], us(now))
    return market


def test_a_cycle_scores_what_a_full_recomputation_gives(dual: DualModel) -> None:
    history = _history({"AAA": 50.0, "BBB": 20.0, "MKT": 4000.0}, 40)
    now = TODAY + pd.Timedelta(hours=16)
    market = _loaded(history, now)
    assert len(market.closed) == len(history) and not market.open
    ticks = [tick("AAA", TODAY + pd.Timedelta(hours=14, minutes=31), 50.5), tick("MKT", now, 4010.0),
             tick("AAA", now, 51.0, 7.0), tick("BBB", now - pd.Timedelta(minutes=5), 19.8)]
    for one in ticks:
        market.fold(one)
    predicted_at = datetime(2024, 3, 4, 16, 0, 1, tzinfo=UTC)
    frame, skipped = score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5,
                                 predicted_at=predicted_at)
    assert not skipped
    today = market.open_bars(["AAA", "BBB", "MKT"]).drop(columns=["trades", "open_ts"])
    expected = _reference(pd.concat([history, today], ignore_index=True), dual, predicted_at)
    pd.testing.assert_frame_equal(frame.sort_values("symbol").reset_index(drop=True), expected, rtol=1e-6)
    assert list(frame["symbol"]) == ["AAA", "BBB", "MKT"]
    assert frame.loc[frame["symbol"] == "AAA", "data_timestamp"].iloc[0] == now
    # Nothing new, nothing scored; a tick of one symbol scores that symbol only.
    assert score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)[0].empty
    market.fold(tick("BBB", now + pd.Timedelta(seconds=1), 19.9))
    assert list(score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)[0]["symbol"]) == ["BBB"]


def test_a_bar_closed_by_the_next_days_tick_joins_the_sequence(dual: DualModel) -> None:
    history = _history({"AAA": 50.0, "MKT": 4000.0}, 30, seed=2)
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    for day, price in ((0, 51.0), (1, 52.5)):
        at = TODAY + pd.Timedelta(days=day, hours=15)
        market.fold(tick("MKT", at, 4000.0 + day))
        market.fold(tick("AAA", at, price))
        predicted_at = datetime(2024, 3, 4 + day, 15, 0, 1, tzinfo=UTC)
        frame, _ = score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5, predicted_at=predicted_at)
    assert len(market.closed) == len(history) + 2  # today's bars closed when tomorrow's tick came
    # The history, the two bars that closed here, and the open ones.
    everything = pd.concat([market.closed, market.open_bars(["AAA", "MKT"])], ignore_index=True)
    expected = _reference(everything.drop(columns=["trades", "open_ts"]), dual, predicted_at)
    pd.testing.assert_frame_equal(frame.sort_values("symbol").reset_index(drop=True), expected, rtol=1e-6)
    # The closed bar's model features were kept (as the stream's would be stored); the others
    # wait for Delta's row (the scorer computes only what the models read).
    closed_day = market.closed_features[market.closed_features["window_start"] == TODAY]
    assert sorted(closed_day["symbol"]) == ["AAA", "MKT"]
    full = compute_features(everything, "1d", everything[everything["symbol"] == "MKT"])
    full["window_start"] = pd.to_datetime(full["window_start"], utc=True)
    want = full[full["window_start"] == TODAY].set_index("symbol")[dual.features]
    got = closed_day.set_index("symbol")
    pd.testing.assert_frame_equal(got[dual.features].sort_index(), want.sort_index(), rtol=1e-9)
    others = [name for name in feature_names("1d") if name not in dual.features]
    assert got[others].isna().all().all()
    # The carry moved to the newest closed bar: the recursive means there are the full history's.
    _, carry = compute_features(market.closed, "1d", with_carry=True)
    carry["window_start"] = pd.to_datetime(carry["window_start"], utc=True)
    newest = carry.groupby("symbol").tail(1).set_index("symbol").sort_index()
    pd.testing.assert_frame_equal(market.carry.sort_index().loc[:, newest.columns], newest, rtol=1e-12,
                                  check_dtype=False)


def test_without_a_champion_the_momentum_baseline_scores() -> None:
    history = _history({"AAA": 50.0, "MKT": 4000.0}, 10)
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    market.fold(tick("AAA", TODAY + pd.Timedelta(hours=15), 52.0))
    frame, _ = score_cycle(market, None, index_symbol="MKT", horizon="1d", lookback=5)
    assert list(frame["symbol"]) == ["AAA"] and frame["model_name"].iloc[0] == "momentum-baseline"


def test_a_stored_bar_of_the_current_window_is_the_open_bar_to_fold_into() -> None:
    history = _history({"AAA": 50.0, "MKT": 4000.0}, 10)
    partial = history[history["window_start"] == history["window_start"].max()].assign(
        window_start=TODAY, window_end=TODAY + pd.Timedelta(days=1), trades=3,
        open_ts=TODAY + pd.Timedelta(hours=14, minutes=30), close_ts=TODAY + pd.Timedelta(hours=15))
    market = _loaded(pd.concat([history, partial], ignore_index=True), TODAY + pd.Timedelta(hours=16))
    assert sorted(market.open) == ["AAA", "MKT"] and len(market.closed) == len(history)
    before = market.open["AAA"]
    volume, trades = before.volume, before.trades
    market.fold(tick("AAA", TODAY + pd.Timedelta(hours=16), 1.0, volume=5.0))
    after = market.open["AAA"]
    assert (after.close, after.low, after.volume, after.trades) == (1.0, 1.0, volume + 5.0, trades + 1)


def test_history_appends_to_the_streams_predictions_table(spark, settings, dual: DualModel) -> None:
    from tickcast.catalog.tables import ensure_tables

    ensure_tables(spark, settings)
    history = _history({"AAA": 50.0, "BBB": 20.0, "MKT": 4000.0}, 12)
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    for symbol in ("AAA", "BBB", "MKT"):
        market.fold(tick(symbol, TODAY + pd.Timedelta(hours=15), 10.0))
    frame, _ = score_cycle(market, None, index_symbol="MKT", horizon="1d", lookback=5)
    writer = HistoryWriter(settings)
    writer.add(frame)
    writer.add(frame.iloc[:1])
    assert writer.flush() == 4 and writer.flush() == 0
    stored = spark.read.format("delta").load(tables.table_path(settings, "predictions"))
    assert stored.count() == 4
    row = stored.where(F.col("symbol") == "BBB").first()
    expected = frame[frame["symbol"] == "BBB"].iloc[0]
    assert row["probabilities"]["up"] == pytest.approx(expected["prob_up"])
    assert row["predicted_at"].replace(tzinfo=UTC) == expected["predicted_at"].to_pydatetime()


def test_a_reload_keeps_the_bars_closed_here_that_delta_has_not_stored_yet(dual: DualModel) -> None:
    history = _history({"AAA": 50.0, "MKT": 4000.0}, 30, seed=3)
    stored = compute_features(history, "1d", history[history["symbol"] == "MKT"])
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    for day in (0, 1):
        for symbol, price in (("MKT", 4000.0 + day), ("AAA", 51.0 + day)):
            market.fold(tick(symbol, TODAY + pd.Timedelta(days=day, hours=15), price))
        score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)
    before = (market.closed.copy(), market.closed_features.copy())
    # Delta still ends yesterday, and one of its old bars was corrected (a backfill).
    corrected = history.copy()
    corrected.loc[corrected.index[0], "close"] = 1.0
    market.load(corrected, stored[market.feature_columns], us(TODAY + pd.Timedelta(days=1, hours=16)))
    assert len(market.closed) == len(before[0]) and len(market.closed_features) == len(before[1])
    assert market.closed["close"].iloc[0] == 1.0  # Delta's correction is in
    newest = market.closed.groupby("symbol")["window_start"].max()
    assert (newest == TODAY).all()  # the bars that closed here are kept
    assert sorted(market.open) == ["AAA", "MKT"] and market.open["AAA"].close == 52.0
    # AAA's carry was computed afresh from the corrected bars; MKT's, unchanged, was kept.
    _, carry = compute_features(market.closed, "1d", with_carry=True)
    carry["window_start"] = pd.to_datetime(carry["window_start"], utc=True)
    newest = carry.groupby("symbol").tail(1).set_index("symbol").sort_index()
    pd.testing.assert_frame_equal(market.carry.sort_index().loc[:, newest.columns], newest, rtol=1e-12,
                                  check_dtype=False)


def test_a_reload_keeps_a_bar_closed_here_whose_last_ticks_delta_has_not_stored_yet(dual: DualModel) -> None:
    """The stream is seconds behind: Delta's copy of the bar that just closed here lacks its
    last tick. The fuller copy held here (bar and features) stays until Delta catches up."""
    history = _history({"AAA": 50.0, "MKT": 4000.0}, 30, seed=5)
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    day = [("MKT", 4000.0), ("AAA", 51.0), ("AAA", 53.5)]
    for n, (symbol, price) in enumerate(day):
        market.fold(tick(symbol, TODAY + pd.Timedelta(hours=15, minutes=n), price))
    score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)
    for symbol, price in (("MKT", 4001.0), ("AAA", 52.0)):  # tomorrow: today's bars close here
        market.fold(tick(symbol, TODAY + pd.Timedelta(days=1, hours=15), price))
    score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)
    held_bars = market.closed.copy()
    held_features = market.closed_features.copy()

    # Delta has today's bars, AAA's without its last tick, and features computed from that.
    today = market.closed[market.closed["window_start"] == TODAY].copy()
    partial = today["symbol"] == "AAA"
    today.loc[partial, ["close", "high", "trades"]] = [51.0, 51.0, 1]
    behind = pd.concat([history, today], ignore_index=True)
    stored = compute_features(behind, "1d", behind[behind["symbol"] == "MKT"])
    market.load(behind, stored[market.feature_columns], us(TODAY + pd.Timedelta(days=1, hours=16)))
    pd.testing.assert_frame_equal(market.closed.reset_index(drop=True), held_bars.reset_index(drop=True),
                                  check_dtype=False)
    # (The scorer computes only the models' features; Delta's rows have all of them.)
    model_columns = ["symbol", "window_start", *dual.features]
    pd.testing.assert_frame_equal(market.closed_features[model_columns].reset_index(drop=True),
                                  held_features[model_columns].reset_index(drop=True), check_dtype=False)

    # Once Delta has the whole bar, its copy is taken again (equal here, by the parity tests).
    caught_up = pd.concat([history, held_bars[held_bars["window_start"] == TODAY]], ignore_index=True)
    corrected = caught_up.copy()
    corrected.loc[corrected.index[-1], "volume"] += 1.0  # a difference to see which copy is kept
    stored = compute_features(corrected, "1d", corrected[corrected["symbol"] == "MKT"])
    market.load(corrected, stored[market.feature_columns], us(TODAY + pd.Timedelta(days=1, hours=17)))
    newest = market.closed[market.closed["window_start"] == TODAY].set_index("symbol")["volume"]
    assert newest.to_dict() == corrected[corrected["window_start"] == TODAY].set_index("symbol")["volume"].to_dict()


def test_a_reload_on_another_thread_is_adopted_unless_bars_closed_meanwhile(dual: DualModel) -> None:
    import threading

    history = _history({"AAA": 50.0, "MKT": 4000.0}, 30, seed=4)
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    corrected = history.copy()
    newest_aaa = corrected.index[(corrected["symbol"] == "AAA") & (corrected["window_start"] == corrected[
        "window_start"].max())][0]
    corrected.loc[newest_aaa, "close"] = 49.0  # Delta corrected AAA's newest closed bar, and its features
    stored = compute_features(corrected, "1d", corrected[corrected["symbol"] == "MKT"])

    def reload_beside(work) -> LiveMarket:
        shadow = market.shadow()
        loader = threading.Thread(target=shadow.load, args=(corrected, stored[market.feature_columns],
                                                           us(TODAY + pd.Timedelta(hours=16))))
        loader.start()
        work()
        loader.join()
        return shadow

    # Ticks of today's open bar meanwhile: the reload is taken, the open bar kept.
    shadow = reload_beside(lambda: market.fold(tick("AAA", TODAY + pd.Timedelta(hours=15), 51.0)))
    assert market.adopt(shadow)
    aaa = market.closed[market.closed["symbol"] == "AAA"]
    assert aaa["close"].iloc[-1] == 49.0 and aaa["window_start"].iloc[-1] == history["window_start"].max()
    assert market.open["AAA"].close == 51.0 and "AAA" in market.dirty
    frame, _ = score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)
    everything = pd.concat([corrected, market.open_bars(["AAA"])], ignore_index=True)
    expected = _reference(everything.drop(columns=["trades", "open_ts"]), dual, frame["predicted_at"].iloc[0])
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected[expected["symbol"] == "AAA"].reset_index(
        drop=True), rtol=1e-6)

    # A bar closed here meanwhile (tomorrow's tick, scored): the reload lacks it and is refused.
    def roll() -> None:
        market.fold(tick("AAA", TODAY + pd.Timedelta(days=1, hours=15), 52.0))
        score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)

    held = market.closed
    shadow = reload_beside(roll)
    assert market.closed is not held and not market.adopt(shadow)
    assert market.closed["window_start"].max() == TODAY  # today's bar, closed here, is still held


def test_sequences_gathered_from_the_tail_are_build_batchs(dual: DualModel) -> None:
    history = _history({"AAA": 50.0, "BBB": 20.0, "MKT": 4000.0}, 12, seed=6)
    market = _loaded(history, TODAY + pd.Timedelta(hours=15))
    for symbol, price in (("AAA", 51.0), ("BBB", 19.5), ("MKT", 4001.0)):
        market.fold(tick(symbol, TODAY + pd.Timedelta(hours=15), price))
    symbols, closed_from = market.take("MKT")
    open_features = market.features(symbols, closed_from, "MKT", dual.features)
    gathered, skipped = market.sequences(open_features, dual.features, dual.sequence_length)
    frame = pd.concat([market.closed_features, open_features], ignore_index=True)
    expected, expected_skipped = build_batch(frame, market.open_bars(symbols), dual.features, dual.sequence_length)
    assert list(gathered.symbols) == list(expected.symbols) == ["AAA", "BBB", "MKT"]
    np.testing.assert_array_equal(gathered.raw, expected.raw)
    np.testing.assert_array_equal(gathered.close, expected.close)
    assert (gathered.data_timestamp == expected.data_timestamp).all() and skipped == expected_skipped == {}
    # A symbol short of history takes build_batch's way, and is skipped with its reason.
    market.fold(tick("NEW", TODAY + pd.Timedelta(hours=15, minutes=1), 5.0))
    symbols, closed_from = market.take("MKT")
    assert symbols == ["NEW"]
    batch, skipped = market.sequences(market.features(symbols, closed_from, "MKT", dual.features), dual.features,
                                      dual.sequence_length)
    assert len(batch) == 0 and skipped == {"NEW": f"only 1 bar(s) of features, the models need {LENGTH}"}


def test_a_restored_checkpoint_folds_on_to_the_bars_of_one_uninterrupted_run() -> None:
    import orjson

    at = TODAY + pd.Timedelta(hours=15)
    ticks = [tick("AAA", at + pd.Timedelta(minutes=i), 50.0 + (i * 7) % 5, float(1 + i)) for i in range(12)]
    # A copy of a tick from before the checkpoint, a tick of a bar that rolls, a late one.
    ticks += [ticks[2], tick("AAA", at + pd.Timedelta(days=1), 52.0), tick("BBB", at, 9.0),
              tick("BBB", at - pd.Timedelta(minutes=10), 8.0)]
    whole = LiveMarket("1d", late_tolerance_us=TOLERANCE_US)
    for one in ticks:
        whole.fold(one)

    before = LiveMarket("1d", late_tolerance_us=TOLERANCE_US)
    for one in ticks[:7]:
        before.fold(one)
    # Through JSON, as the scorer writes it.
    saved = orjson.loads(orjson.dumps(before.checkpoint(msg_ids=1_000)))
    after = LiveMarket("1d", late_tolerance_us=TOLERANCE_US)
    after.restore(saved)
    for one in ticks[7:]:
        after.fold(one)

    assert after.open == whole.open and after.rolled == whole.rolled
    assert after.skipped["duplicate"] == 1 and after.skipped["late"] == 1
    with pytest.raises(ValueError, match="1d bars cannot restore 1m"):
        LiveMarket("1m", late_tolerance_us=TOLERANCE_US).restore(saved)


def test_an_index_move_rescores_every_symbol_spread_over_cycles_own_ticks_at_once() -> None:
    at = TODAY + pd.Timedelta(hours=15)
    market = LiveMarket("1d", late_tolerance_us=TOLERANCE_US, rescore_per_cycle=4)
    names = [f"S{i}" for i in range(10)]
    for name in [*names, "MKT"]:
        market.fold(tick(name, at, 10.0))
    assert market.take("MKT")[0] == sorted([*names, "MKT"])  # each has a tick of its own: all at once

    market.fold(tick("MKT", at + pd.Timedelta(minutes=1), 10.5))
    first, _ = market.take("MKT")
    market.fold(tick("S9", at + pd.Timedelta(minutes=2), 11.0))
    second, _ = market.take("MKT")
    third, _ = market.take("MKT")
    fourth, _ = market.take("MKT")
    assert first == ["MKT", "S0", "S1", "S2", "S3"]  # the index's own tick, and the four oldest due
    assert second == ["S4", "S5", "S6", "S7", "S9"]  # S9's own tick: at once, besides the four
    assert third == ["S8"] and fourth == []  # each symbol once


def test_a_symbol_no_tick_reached_is_scored_once_per_new_bar_from_its_stored_bars(dual: DualModel) -> None:
    history = _history({"AAA": 50.0, "BBB": 20.0, "MKT": 4000.0}, 40)
    now = TODAY + pd.Timedelta(hours=16)
    market = _loaded(history, now)
    market.fold(tick("AAA", now, 51.0))
    predicted_at = datetime(2024, 3, 4, 16, 0, 1, tzinfo=UTC)
    # Without a champion there is nothing to score them with, and they stay due.
    assert score_stale(market, None)[0].empty

    frame, skipped = score_stale(market, dual, predicted_at=predicted_at)

    # AAA has an open bar (the cycles score it); BBB and the index only their stored bars.
    assert list(frame["symbol"]) == ["BBB", "MKT"] and not skipped
    expected = _reference(history, dual, predicted_at)
    expected = expected[expected["symbol"].isin(["BBB", "MKT"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame.sort_values("symbol").reset_index(drop=True), expected)
    newest_close = history[history["symbol"] == "BBB"]["close_ts"].max()
    assert pd.Timestamp(frame.set_index("symbol").loc["BBB", "data_timestamp"]) == newest_close
    # Once per newest bar: nothing again until a reload brings a newer one.
    assert score_stale(market, dual)[0].empty
    assert score_stale(market, None)[0].empty
