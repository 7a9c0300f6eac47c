"""The scoring package: sequences shaped from frames and from Delta, the dual-model prediction
from versions registered in a real MLflow store, the model loader, and publishing on a real
Kafka broker. Expected values come from the ONNX bundles themselves, opened independently."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from deltalake import write_deltalake

from tickcast.catalog import tables
from tickcast.catalog.topics import topic_message_count
from tickcast.core.intervals import horizon_label
from tickcast.core.predictions import FRAME_COLUMNS, Prediction
from tickcast.core.settings import Settings
from tickcast.models.bundle import ModelBundle
from tickcast.models.confirmation import confirm
from tickcast.models.dataset import Scaler
from tickcast.models.labels import DOWN, UP
from tickcast.models.registry import RegistryError
from tickcast.models.untrained import quick_bundles, register_bundles
from tickcast.scoring.models import DeployedModel, ModelLoader, pair
from tickcast.scoring.publish import PredictionPublisher, PublishError
from tickcast.scoring.score import SequenceBatch, build_batch, score
from tickcast.scoring.sources import latest_sequences

FEATURES = ["return_1d", "rsi_14", "volatility_5d"]
LENGTH = 4
LSTM, TRANSFORMER = "tickcast-lstm-1d", "tickcast-transformer-1d"
# Version 2 has version 1's networks behind a scaler centred here: it scores x as version 1 scores x - SHIFT.
SHIFT = np.array([0.5, -1.0, 2.0])
PROB_COLUMNS = ["prob_down", "prob_neutral", "prob_up"]  # in the bundles' output order (DOWN, NEUTRAL, UP)
QUANTILE_COLUMNS = ["p10", "p50", "p90"]
TOL = 1e-6  # float32 networks; a batch and a single row may differ in the last bits


@dataclass(frozen=True)
class Registry:
    settings: Settings
    loader: ModelLoader
    v1: dict[str, Path]  # champion: children AAA, identity scaler
    v2: dict[str, Path]  # challenger: v1 with the scaler mean at SHIFT


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return quick_bundles(tmp_path_factory.mktemp("bundles"), features=FEATURES, sequence_length=LENGTH,
                         children=("AAA",))


@pytest.fixture(scope="module")
def registry(bundles, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("registry")
    settings = base_settings.model_copy(update={"home": root / "home"})
    assert register_bundles(settings, bundles) == {LSTM: "1", TRANSFORMER: "1"}
    v2 = {}
    for arch, path in bundles.items():
        v2[arch] = Path(shutil.copytree(path, root / "v2" / arch))
        Scaler(FEATURES, SHIFT, np.ones(len(FEATURES))).save(v2[arch] / "scaler.json")
    assert register_bundles(settings, v2, champion=False) == {LSTM: "2", TRANSFORMER: "2"}
    return Registry(settings, ModelLoader(settings), bundles, v2)


def _direct(paths: dict[str, Path], symbols, raw: np.ndarray):
    """(probabilities, quantiles) of each architecture, from bundles opened here."""
    return tuple(ModelBundle(paths[arch]).predict(symbols, raw) for arch in ("lstm", "transformer"))


def _batch(symbols: list[str], raw: np.ndarray, close: list[float]) -> SequenceBatch:
    stamps = pd.DatetimeIndex([pd.Timestamp("2024-03-01 21:00", tz="UTC") + pd.Timedelta(minutes=i)
                               for i in range(len(symbols))])
    return SequenceBatch(np.array(symbols, dtype=object), raw, np.array(close, dtype=float), stamps)


def _raw(n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.5, size=(n, LENGTH, len(FEATURES)))


# -- build_batch -------------------------------------------------------------------------------

T0 = pd.Timestamp("2024-01-02", tz="UTC")


def _value(k: int, day: int, j: int) -> float:
    """Feature j of symbol k on day `day`: every cell different and recognisable."""
    return 100.0 * k + day + 0.1 * (j + 1)


def _feature_frame(counts: dict[str, int]) -> pd.DataFrame:
    rows = []
    for k, (symbol, count) in enumerate(counts.items()):
        for day in range(count):
            rows.append({"symbol": symbol, "interval": "1d", "window_start": T0 + pd.Timedelta(days=day),
                         **{f: _value(k, day, j) for j, f in enumerate(FEATURES)}, "unused": -1.0})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)


def _bar_frame(counts: dict[str, int], extra_days: int = 1) -> pd.DataFrame:
    """A bar for every feature day, and `extra_days` newer bars that have no features yet."""
    rows = []
    for k, (symbol, count) in enumerate(counts.items()):
        for day in range(count + extra_days):
            ws = T0 + pd.Timedelta(days=day)
            rows.append({"symbol": symbol, "window_start": ws, "close": 10.0 * k + day + 0.5,
                         "close_ts": ws + pd.Timedelta(hours=20, minutes=k), "volume": 1.0})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=4).reset_index(drop=True)


def _expected_raw(k: int, count: int, names: list[str]) -> np.ndarray:
    return np.array([[_value(k, day, FEATURES.index(n)) for n in names] for day in range(count - LENGTH, count)])


def test_build_batch_takes_the_last_rows_in_time_order_and_the_matching_close():
    counts = {"MSFT": 9, "AAPL": LENGTH, "IBM": 2, "NOBAR": 6, "NANCLOSE": 5}
    features = _feature_frame(counts)
    bars = _bar_frame(counts)
    bars = bars[~((bars.symbol == "NOBAR") & (bars.window_start == T0 + pd.Timedelta(days=5)))]
    bars.loc[(bars.symbol == "NANCLOSE") & (bars.window_start == T0 + pd.Timedelta(days=4)), "close"] = np.nan
    names = ["volatility_5d", "return_1d", "rsi_14"]  # not the frame's column order

    batch, skipped = build_batch(features, bars, names, LENGTH)

    assert batch.symbols.tolist() == ["AAPL", "MSFT"]
    assert len(batch) == 2 and batch.raw.shape == (2, LENGTH, 3)
    np.testing.assert_array_equal(batch.raw[0], _expected_raw(1, LENGTH, names))
    np.testing.assert_array_equal(batch.raw[1], _expected_raw(0, 9, names))
    # The close of the bar of the newest feature row (not the newer bar without features).
    np.testing.assert_array_equal(batch.close, [10.0 * 1 + 3 + 0.5, 10.0 * 0 + 8 + 0.5])
    assert list(batch.data_timestamp) == [T0 + pd.Timedelta(days=3, hours=20, minutes=1),
                                          T0 + pd.Timedelta(days=8, hours=20)]
    assert str(batch.data_timestamp.tz) == "UTC"
    assert skipped == {
        "IBM": f"only 2 bar(s) of features, the models need {LENGTH}",
        "NOBAR": "no close for its newest feature bar",
        "NANCLOSE": "no close for its newest feature bar",
    }


def test_build_batch_keeps_missing_values_as_nan():
    counts = {"AAA": 6, "BBB": 5}
    features = _feature_frame(counts)
    hole = (features.symbol == "AAA") & (features.window_start == T0 + pd.Timedelta(days=4))
    features.loc[hole, "rsi_14"] = np.nan
    old = (features.symbol == "BBB") & (features.window_start == T0)  # outside BBB's last LENGTH rows
    features.loc[old, FEATURES] = np.nan

    batch, skipped = build_batch(features, _bar_frame(counts), FEATURES, LENGTH)

    assert skipped == {} and batch.symbols.tolist() == ["AAA", "BBB"]
    expected = _expected_raw(0, 6, FEATURES)
    expected[2, 1] = np.nan  # day 4 is the third of days 2..5
    np.testing.assert_array_equal(batch.raw[0], expected)  # NaN compares equal to NaN here
    assert np.isnan(batch.raw[0]).sum() == 1
    np.testing.assert_array_equal(batch.raw[1], _expected_raw(1, 5, FEATURES))


def test_build_batch_rejects_a_frame_without_a_model_feature():
    with pytest.raises(ValueError, match=r"lacks \['macd'\]: the models were trained on other features"):
        build_batch(_feature_frame({"AAA": 5}), _bar_frame({"AAA": 5}), [*FEATURES, "macd"], LENGTH)


def test_build_batch_of_nothing_usable_is_empty():
    batch, skipped = build_batch(_feature_frame({"AAA": 2}), _bar_frame({"AAA": 2}), FEATURES, LENGTH)
    assert len(batch) == 0 and batch.raw.shape == (0, LENGTH, len(FEATURES))
    assert skipped == {"AAA": f"only 2 bar(s) of features, the models need {LENGTH}"}


# -- horizon_label and pair --------------------------------------------------------------------


@pytest.mark.parametrize("interval,bars,label", [
    ("1d", 1, "1d"), ("1d", 5, "5d"), ("1m", 30, "30m"), ("1m", 60, "1h"), ("1m", 120, "2h"), ("1m", 90, "90m"),
])
def test_horizon_label(interval, bars, label):
    assert horizon_label(interval, bars) == label


def _variant(source: Path, target: Path, *, manifest: dict | None = None, config: dict | None = None) -> Path:
    """A copy of a bundle with manifest or config.yaml entries replaced."""
    path = Path(shutil.copytree(source, target))
    if manifest:
        data = json.loads((path / "manifest.json").read_text())
        (path / "manifest.json").write_text(json.dumps({**data, **manifest}))
    if config:
        data = yaml.safe_load((path / "config.yaml").read_text())
        for section, values in config.items():
            data[section] = {**data[section], **values}
        (path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_pair_reads_threshold_and_horizon_from_the_lstm_config(bundles, tmp_path):
    lstm = _variant(bundles["lstm"], tmp_path / "lstm", config={"confirmation": {"threshold": 0.55},
                                                                 "labels": {"horizon": 3}})
    dual = pair(DeployedModel(LSTM, "4", ModelBundle(lstm)),
                DeployedModel(TRANSFORMER, "7", ModelBundle(bundles["transformer"])))
    assert (dual.threshold, dual.horizon) == (0.55, "3d")
    assert (dual.model_name, dual.model_version) == (f"{LSTM}+{TRANSFORMER}", "4+7")
    assert dual.features == FEATURES and dual.sequence_length == LENGTH


@pytest.mark.parametrize("manifest,detail", [
    ({"features": FEATURES[:2]}, f"3 vs 2 features, sequences of {LENGTH} vs {LENGTH}"),
    ({"features": ["return_1d", "rsi_14", "macd"]}, f"3 vs 3 features, sequences of {LENGTH} vs {LENGTH}"),
    ({"features": FEATURES[::-1]}, f"3 vs 3 features, sequences of {LENGTH} vs {LENGTH}"),
    ({"sequence_length": LENGTH + 2}, f"3 vs 3 features, sequences of {LENGTH} vs {LENGTH + 2}"),
])
def test_pair_refuses_bundles_that_take_different_input(bundles, tmp_path, manifest, detail):
    transformer = _variant(bundles["transformer"], tmp_path / "transformer", manifest=manifest)
    with pytest.raises(RegistryError) as caught:
        pair(DeployedModel(LSTM, "1", ModelBundle(bundles["lstm"])),
             DeployedModel(TRANSFORMER, "2", ModelBundle(transformer)))
    assert str(caught.value) == (
        f"{LSTM} v1 and {TRANSFORMER} v2 do not take the same input ({detail}); train both from one experiment"
    )


# -- ModelLoader -------------------------------------------------------------------------------


def test_loader_finds_nothing_in_an_empty_registry(settings: Settings):
    loader = ModelLoader(settings)
    assert loader.dual("1d") is None
    assert loader.version_of(LSTM, "champion") is None
    assert loader.version_of(LSTM, "1") is None
    assert loader.aliases("1d") == {}


def test_a_registry_that_cannot_be_read_is_not_an_empty_one(settings: Settings, monkeypatch) -> None:
    from tickcast.core.errors import Unavailable
    from tickcast.models.listing import registered_models
    from tickcast.platform.processes import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = settings.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(Unavailable, match="the model registry cannot be read"):
        registered_models(ModelLoader(down), "1d")


def test_loader_needs_both_architectures(settings: Settings, bundles):
    assert register_bundles(settings, {"lstm": bundles["lstm"]}) == {LSTM: "1"}
    loader = ModelLoader(settings)
    assert loader.version_of(LSTM, "champion") == "1"
    assert loader.dual("1d") is None
    assert not settings.models_cache_dir.exists()  # nothing downloaded for half a pair


def test_version_of_resolves_aliases_and_numbers_to_strings(registry: Registry):
    loader = registry.loader
    for name in (LSTM, TRANSFORMER):
        assert loader.version_of(name, "champion") == "1"
        assert loader.version_of(name, "challenger") == "2"
        assert loader.version_of(name, "2") == "2"
        assert loader.version_of(name, "9") is None
        assert loader.version_of(name, "retired") is None
    assert all(type(loader.version_of(LSTM, ref)) is str for ref in ("champion", "1"))
    assert loader.version_of("tickcast-lstm-1m", "champion") is None


def test_load_downloads_a_version_once_into_the_cache(registry: Registry, monkeypatch):
    loader = registry.loader
    deployed = loader.load(LSTM, "1")
    target = registry.settings.models_cache_dir / LSTM / "1"
    assert (deployed.name, deployed.version) == (LSTM, "1")
    assert deployed.bundle.directory == target and (target / "manifest.json").is_file()
    for relative in ("manifest.json", "scaler.json", "config.yaml", "parent.onnx", "children/AAA.onnx"):
        assert filecmp.cmp(target / relative, registry.v1["lstm"] / relative, shallow=False), relative
    assert loader.load(LSTM, "1") is deployed
    assert loader.load(LSTM, 1) is deployed  # a number is the same version as its string
    # Only finished versions in the cache: the staging directory is gone.
    assert sorted(p.name for p in (registry.settings.models_cache_dir / LSTM).iterdir()) == ["1"]

    # Another loader (another process) opens the downloaded copy without downloading it again
    # (it asks the registry only for the content hash the copy must match).
    import mlflow.artifacts

    other = ModelLoader(registry.settings)

    def no_download(**_):
        raise AssertionError("a cached version was downloaded again")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    again = other.load(LSTM, "1")
    assert again is not deployed and again.bundle.directory == target


def test_dual_pairs_given_versions(registry: Registry):
    loader = registry.loader
    dual = loader.dual("1d", "2", "1")
    cache = registry.settings.models_cache_dir
    assert (dual.model_name, dual.model_version) == (f"{LSTM}+{TRANSFORMER}", "2+1")
    assert dual.lstm.bundle.directory == cache / LSTM / "2"
    assert dual.transformer.bundle.directory == cache / TRANSFORMER / "1"
    assert loader.dual("1d", "challenger", "challenger").model_version == "2+2"
    assert loader.dual("1d").model_version == "1+1"
    assert loader.dual("1d", "3", "1") is None
    assert loader.dual("1m") is None

    # Version 2 really is the second registration: its scaler moves the input by SHIFT.
    raw = _raw(2, seed=11)
    (p1, q1), _ = _direct(registry.v1, ["BBB", "AAA"], raw - SHIFT)
    p2, q2 = dual.lstm.bundle.predict(["BBB", "AAA"], raw)
    np.testing.assert_allclose(p2, p1, atol=TOL)
    np.testing.assert_allclose(q2, q1, atol=TOL)
    (p_v1, _), _ = _direct(registry.v1, ["BBB", "AAA"], raw)
    assert not np.allclose(p2, p_v1, atol=1e-4)


def test_aliases_show_champion_and_challenger(registry: Registry):
    aliases = registry.loader.aliases("1d")
    assert set(aliases) == {LSTM, TRANSFORMER}
    for name, arch in ((LSTM, "lstm"), (TRANSFORMER, "transformer")):
        assert set(aliases[name]) == {"champion", "challenger"}
        assert str(aliases[name]["champion"].version) == "1"
        assert str(aliases[name]["challenger"].version) == "2"
        assert aliases[name]["champion"].tags["architecture"] == arch
    assert registry.loader.aliases("1m") == {}


def test_losing_the_download_race_to_another_process_still_loads(registry: Registry, monkeypatch, tmp_path):
    import mlflow

    # The same registry, an empty download cache.
    settings = registry.settings.model_copy(update={"home": tmp_path / "home",
                                                    "mlflow_tracking_uri": registry.settings.tracking_uri})
    loader = ModelLoader(settings)
    target = settings.models_cache_dir / TRANSFORMER / "2"
    assert not target.exists()
    real = mlflow.artifacts.download_artifacts

    def download_while_another_process_finishes(**kwargs):
        out = real(**kwargs)
        shutil.copytree(registry.v2["transformer"], target)  # the other process renames first
        return out

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download_while_another_process_finishes)
    deployed = loader.load(TRANSFORMER, "2")
    assert deployed.bundle.directory == target


# -- score -------------------------------------------------------------------------------------


def test_score_averages_both_models_and_confirms_with_each(registry: Registry):
    dual = registry.loader.dual("1d")
    assert dual.threshold == 0.4 and dual.horizon == "1d"  # quick_bundles' experiment defaults
    raw = _raw(4)
    raw[1] = raw[0]  # BBB gets AAA's input: only the routing to AAA's child differs
    batch = _batch(["AAA", "BBB", "CCC", "DDD"], raw, [10.0, 250.0, 3.5, 1.25])
    at = datetime(2024, 3, 2, 9, 30, tzinfo=UTC)

    frame = score(dual, batch, predicted_at=at)

    assert list(frame.columns) == list(FRAME_COLUMNS) and len(frame) == 4
    (p_l, q_l), (p_t, q_t) = _direct(registry.v1, batch.symbols, raw)
    probabilities = (p_l.astype(float) + p_t.astype(float)) / 2
    quantiles = (q_l.astype(float) + q_t.astype(float)) / 2
    np.testing.assert_allclose(frame[PROB_COLUMNS].to_numpy(dtype=float), probabilities, atol=TOL)
    np.testing.assert_allclose(frame[QUANTILE_COLUMNS].to_numpy(dtype=float), quantiles, atol=TOL)
    np.testing.assert_array_equal(frame["predicted_return"], frame["p50"])
    np.testing.assert_allclose(frame["predicted_price"], batch.close * (1.0 + frame["p50"]), rtol=1e-12)
    np.testing.assert_allclose(frame["predicted_price"], batch.close * (1.0 + quantiles[:, 1]), rtol=1e-5)
    signals, confidence = confirm(p_l, p_t, dual.threshold)
    assert frame["signal"].tolist() == signals.tolist()
    np.testing.assert_allclose(frame["confidence"], confidence, atol=TOL)
    assert frame["symbol"].tolist() == ["AAA", "BBB", "CCC", "DDD"]
    assert set(frame["horizon"]) == {"1d"}
    assert set(frame["model_name"]) == {"tickcast-lstm-1d+tickcast-transformer-1d"}
    assert set(frame["model_version"]) == {"1+1"}
    assert list(frame["data_timestamp"]) == list(batch.data_timestamp)
    assert set(frame["predicted_at"]) == {pd.Timestamp(at)}

    # AAA is scored by its child networks, BBB (same input) by the parents.
    assert not np.allclose(frame.loc[0, PROB_COLUMNS].to_numpy(dtype=float),
                           frame.loc[1, PROB_COLUMNS].to_numpy(dtype=float), atol=1e-4)
    for bundle, p in ((ModelBundle(registry.v1["lstm"]), p_l), (ModelBundle(registry.v1["transformer"]), p_t)):
        x = bundle.prepare(raw[:2])
        np.testing.assert_allclose(p[0], bundle.children["AAA"].run(x[:1])[0][0], atol=TOL)
        np.testing.assert_allclose(p[1], bundle.parent.run(x[1:2])[0][0], atol=TOL)


def test_score_signal_needs_both_models_above_the_threshold(registry: Registry):
    dual = registry.loader.dual("1d")
    raw = _raw(5, seed=21)
    batch = _batch(["AAA", "BBB", "CCC", "DDD", "EEE"], raw, [1.0] * 5)
    (p_l, _), (p_t, _) = _direct(registry.v1, batch.symbols, raw)
    agreed_up, agreed_down = np.minimum(p_l[:, UP], p_t[:, UP]), np.minimum(p_l[:, DOWN], p_t[:, DOWN])

    # Threshold 0: both models always give UP some probability, so everything is a BUY,
    # as confident as the less convinced model (not the mean of the two).
    anything = score(dataclasses.replace(dual, threshold=0.0), batch)
    assert set(anything["signal"]) == {"BUY"}
    np.testing.assert_allclose(anything["confidence"], agreed_up, atol=TOL)
    # Threshold 1: nothing is confirmed; a HOLD's confidence is how far the better direction falls short.
    nothing = score(dataclasses.replace(dual, threshold=1.0), batch)
    assert set(nothing["signal"]) == {"HOLD"}
    np.testing.assert_allclose(nothing["confidence"], 1.0 - np.maximum(agreed_up, agreed_down), atol=TOL)
    # Just below the strongest agreed vote: that symbol alone is confirmed, in its direction.
    best = np.maximum(agreed_up, agreed_down)
    i = int(np.argmax(best))
    one = score(dataclasses.replace(dual, threshold=float(best[i]) - 1e-7), batch)
    expected = ["HOLD"] * 5
    expected[i] = "BUY" if agreed_up[i] > agreed_down[i] else "SELL"
    assert one["signal"].tolist() == expected
    assert one.loc[i, "confidence"] == pytest.approx(float(best[i]), abs=TOL)
    np.testing.assert_allclose(one[PROB_COLUMNS].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("at", [
    datetime(2024, 3, 2, 9, 30),  # naive: taken as UTC
    datetime(2024, 3, 2, 11, 30, tzinfo=timezone(timedelta(hours=2))),
])
def test_score_stamps_predicted_at_in_utc(registry: Registry, at):
    frame = score(registry.loader.dual("1d"), _batch(["AAA"], _raw(1), [5.0]), predicted_at=at)
    assert frame.loc[0, "predicted_at"] == pd.Timestamp("2024-03-02 09:30", tz="UTC")
    assert str(frame.loc[0, "predicted_at"].tz) == "UTC"


def test_score_without_a_predicted_at_uses_now(registry: Registry):
    before = pd.Timestamp.now(tz="UTC")
    frame = score(registry.loader.dual("1d"), _batch(["AAA"], _raw(1), [5.0]))
    assert before <= frame.loc[0, "predicted_at"] <= pd.Timestamp.now(tz="UTC")


def test_score_of_an_empty_batch_is_an_empty_contract_frame(registry: Registry):
    batch, _ = build_batch(_feature_frame({"AAA": 1}), _bar_frame({"AAA": 1}), FEATURES, LENGTH)
    frame = score(registry.loader.dual("1d"), batch)
    assert frame.empty and list(frame.columns) == list(FRAME_COLUMNS)


# -- latest_sequences (Delta) ------------------------------------------------------------------

NOW = datetime(2024, 6, 28, 22, 0, tzinfo=UTC)  # the bounded read starts 16 days earlier (4 * 4 bars)
DAY = timedelta(days=1)
HISTORIES = {  # symbol -> (first day, number of daily feature rows)
    "RECENT": (datetime(2024, 6, 10, tzinfo=UTC), 19),  # through 06-28, all but 3 inside the bound
    "OLD": (datetime(2019, 3, 1, tzinfo=UTC), 10),  # stopped years ago: only the unbounded read finds it
    "STRADDLE": (datetime(2024, 6, 5, tzinfo=UTC), 10),  # 2 rows inside the bound, 4 needed
    "FEW": (datetime(2024, 6, 26, tzinfo=UTC), 2),
    "OTHER": (datetime(2024, 6, 1, tzinfo=UTC), 28),  # not asked for
}


def _delta_value(symbol: str, day: int, j: int) -> float:
    return 1000.0 * list(HISTORIES).index(symbol) + day + 0.1 * (j + 1)


def _timestamps(values: list[datetime]) -> pa.Array:
    return pa.array(values, pa.timestamp("us", tz="UTC"))  # Delta TIMESTAMP, as Spark writes it


def _write_market(settings: Settings) -> None:
    feature_rows, bar_rows = [], []
    for symbol, (first, count) in HISTORIES.items():
        for day in range(count):
            ws = first + day * DAY
            feature_rows.append((symbol, "1d", ws, *[_delta_value(symbol, day, j) for j in range(len(FEATURES))]))
            bar_rows.append((symbol, ws, 50.0 + list(HISTORIES).index(symbol) + day / 100, ws + timedelta(hours=20)))
    # Newer 1m features of RECENT: another partition, which a daily read must not see.
    for minute in range(5):
        ws = datetime(2024, 6, 28, 14, 30, tzinfo=UTC) + timedelta(minutes=minute)
        feature_rows.append(("RECENT", "1m", ws, *[-1.0] * len(FEATURES)))
    symbol, interval, window_start, *values = zip(*feature_rows, strict=True)
    write_deltalake(tables.table_path(settings, "features"), pa.table({
        "symbol": list(symbol), "interval": list(interval), "window_start": _timestamps(list(window_start)),
        **{f: pa.array(v, pa.float64()) for f, v in zip(FEATURES, values, strict=True)},
        "macd": pa.array([0.0] * len(symbol), pa.float64()),
    }), partition_by=["interval"])
    symbol, window_start, close, close_ts = zip(*bar_rows, strict=True)
    write_deltalake(tables.table_path(settings, "bars_1d"), pa.table({
        "symbol": list(symbol), "window_start": _timestamps(list(window_start)),
        "close": pa.array(close, pa.float64()), "close_ts": _timestamps(list(close_ts)),
        "volume": pa.array([1.0] * len(symbol), pa.float64()),
    }))


def test_latest_sequences_reads_the_newest_rows_however_old(settings: Settings, registry: Registry):
    _write_market(settings)
    asked = ["STRADDLE", "RECENT", "FEW", "OLD", "GHOST"]

    batch, skipped = latest_sequences(settings, asked, "1d", FEATURES, LENGTH, now=NOW)

    assert skipped == {"FEW": f"only 2 bar(s) of features, the models need {LENGTH}", "GHOST": "no features"}
    assert batch.symbols.tolist() == ["OLD", "RECENT", "STRADDLE"]
    for i, symbol in enumerate(batch.symbols):
        first, count = HISTORIES[symbol]
        days = range(count - LENGTH, count)
        expected = [[_delta_value(symbol, day, j) for j in range(len(FEATURES))] for day in days]
        np.testing.assert_array_equal(batch.raw[i], expected, err_msg=symbol)
        newest = first + (count - 1) * DAY
        assert batch.close[i] == 50.0 + list(HISTORIES).index(symbol) + (count - 1) / 100
        assert batch.data_timestamp[i] == pd.Timestamp(newest + timedelta(hours=20))
    # STRADDLE's sequence reaches back beyond the bounded read: it came from the re-read.
    assert HISTORIES["STRADDLE"][0] + (HISTORIES["STRADDLE"][1] - LENGTH) * DAY < NOW - 16 * DAY

    frame = score(registry.loader.dual("1d"), batch, predicted_at=NOW)
    assert frame["symbol"].tolist() == ["OLD", "RECENT", "STRADDLE"]
    assert list(frame["data_timestamp"]) == list(batch.data_timestamp)


def test_latest_sequences_without_tables_finds_nothing(settings: Settings):
    batch, skipped = latest_sequences(settings, ["AAA", "BBB"], "1d", FEATURES, LENGTH, now=NOW)
    assert len(batch) == 0 and batch.raw.shape == (0, LENGTH, len(FEATURES))
    assert skipped == {"AAA": "no features", "BBB": "no features"}


# -- PredictionPublisher (real broker) ---------------------------------------------------------

CONTRACT_FIELDS = {"symbol", "horizon", "predicted_return", "predicted_price", "p10", "p50", "p90",
                   "probabilities", "signal", "confidence", "model_name", "model_version", "route", "data_timestamp",
                   "predicted_at"}


@pytest.fixture
def predictions_topic(kafka_bootstrap: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"predictions-test-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)]).values():
        future.result(timeout=60)
    return name


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[tuple[str, dict]]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages, deadline = [], time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=1.0):
                assert message.error() is None, message.error()
                messages.append((message.key().decode(), json.loads(message.value())))
    finally:
        consumer.close()
    return messages


def test_publisher_sends_each_prediction_keyed_by_symbol(registry: Registry, kafka_bootstrap: str,
                                                         predictions_topic: str):
    settings = registry.settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap,
                                                    "topic_predictions": predictions_topic})
    at = datetime(2024, 3, 2, 9, 30, 15, 250000, tzinfo=UTC)
    frame = score(registry.loader.dual("1d"), _batch(["AAA", "BBB", "CCC"], _raw(3, seed=5), [10.0, 20.0, 30.0]),
                  predicted_at=at)
    publisher = PredictionPublisher(settings)

    assert publisher.publish(frame) == 3
    assert publisher.publish(frame.iloc[0:0]) == 0

    messages = _consume(kafka_bootstrap, predictions_topic, 3)
    assert topic_message_count(kafka_bootstrap, predictions_topic) == 3
    assert sorted(key for key, _ in messages) == ["AAA", "BBB", "CCC"]
    rows = frame.set_index("symbol")
    for key, payload in messages:
        assert set(payload) == CONTRACT_FIELDS and payload["symbol"] == key
        prediction = Prediction.model_validate(payload)
        row = rows.loc[key]
        for field in ("predicted_return", "predicted_price", "p10", "p50", "p90", "confidence"):
            assert payload[field] == float(row[field]), field
        assert payload["probabilities"] == {"up": float(row["prob_up"]), "neutral": float(row["prob_neutral"]),
                                            "down": float(row["prob_down"])}
        assert (payload["signal"], payload["horizon"]) == (row["signal"], "1d")
        assert (payload["model_name"], payload["model_version"]) == (f"{LSTM}+{TRANSFORMER}", "1+1")
        assert prediction.data_timestamp == row["data_timestamp"].to_pydatetime()
        assert prediction.predicted_at == at
        assert payload["predicted_at"] == "2024-03-02T09:30:15.250000+00:00"


def test_publisher_reports_a_topic_that_does_not_exist(registry: Registry, kafka_bootstrap: str):
    topic = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    settings = registry.settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap,
                                                    "topic_predictions": topic})
    frame = score(registry.loader.dual("1d"), _batch(["AAA", "BBB"], _raw(2), [1.0, 2.0]))
    # The broker does not create topics; librdkafka would give up on the unknown topic only after
    # topic.metadata.propagation.max.ms (30 s), so the flush wait is what makes this fail fast.
    publisher = PredictionPublisher(settings, flush_seconds=2.0)
    started = time.monotonic()
    with pytest.raises(PublishError, match=rf"2 prediction\(s\) not acknowledged within 2s on topic {topic} \(dropped from the local queue\)"):
        publisher.publish(frame)
    assert time.monotonic() - started < 15
