"""ChampionWatcher follows the registry's ``champion`` alias without a restart, and keeps the
pair it serves when the registry or a new version misbehaves. Real MLflow store, real bundles."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from tickcast.core.settings import Settings
from tickcast.models import registry as model_registry
from tickcast.models.untrained import register_bundles
from tickcast.scoring.models import ChampionWatcher, ModelLoader

FEATURES = ["return_1d", "rsi_14"]  # those of the `untrained_pair` fixture (tests/scoring/conftest.py)
LENGTH = 3
LSTM, TRANSFORMER = "tickcast-lstm-1d", "tickcast-transformer-1d"


@pytest.fixture
def bundles(untrained_pair: dict[str, Path]) -> dict[str, Path]:
    return untrained_pair


def _versions(dual) -> tuple[str, str]:
    return dual.lstm.version, dual.transformer.version


def test_follows_the_champion_at_every_check(settings: Settings, bundles):
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0)
    assert watcher.current() is None

    register_bundles(settings, bundles)
    first = watcher.current()
    assert (first.model_name, first.model_version) == (f"{LSTM}+{TRANSFORMER}", "1+1")
    assert watcher.current() is first  # same champions: the pair is not reopened

    register_bundles(settings, bundles, champion=False)  # a challenger does not serve
    assert watcher.current() is first

    assert register_bundles(settings, bundles, champion=True) == {LSTM: "3", TRANSFORMER: "3"}
    third = watcher.current()
    assert third.model_version == "3+3"
    assert third.lstm.bundle.directory == settings.models_cache_dir / LSTM / "3"
    assert third.transformer.bundle.directory == settings.models_cache_dir / TRANSFORMER / "3"

    # Only the LSTM's champion moves: the pair follows that one architecture.
    register_bundles(settings, {"lstm": bundles["lstm"]})
    assert _versions(watcher.current()) == ("4", "3")


def test_checks_the_registry_at_most_every_check_seconds(settings: Settings, bundles):
    watcher = ChampionWatcher(ModelLoader(settings), "1d", check_seconds=3600)
    assert watcher.current() is None  # the first call always checks
    register_bundles(settings, bundles)
    assert watcher.current() is None  # not checked again within the hour

    first = watcher.refresh()
    assert first.model_version == "1+1" and watcher.current() is first

    register_bundles(settings, bundles, champion=True)
    assert watcher.current() is first
    second = watcher.refresh()
    assert second.model_version == "2+2"
    assert watcher.current() is second


def test_a_registry_error_keeps_the_current_pair(settings: Settings, bundles, monkeypatch, caplog):
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0)
    register_bundles(settings, bundles)
    first = watcher.current()
    assert first.model_version == "1+1"
    register_bundles(settings, bundles, champion=True)

    def unreachable(name: str, ref: str):
        raise ConnectionError("MLflow is down")

    monkeypatch.setattr(loader, "version_of", unreachable)
    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.models"):
        assert watcher.current() is first
        assert watcher.refresh() is first
    assert "could not check the champion models (MLflow is down); keeping the current ones" in caplog.text

    monkeypatch.undo()
    assert watcher.current().model_version == "2+2"  # the registry is back


def test_a_version_that_fails_to_load_keeps_the_current_pair(settings: Settings, bundles, caplog):
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0)
    register_bundles(settings, bundles)
    first = watcher.current()
    register_bundles(settings, bundles, champion=True)
    # Version 2 of the LSTM lost its artifacts: it cannot be downloaded.
    source = loader.client().get_model_version(LSTM, "2").source
    shutil.rmtree(url2pathname(urlparse(source).path))

    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.models"):
        assert watcher.current() is first
        assert watcher.current() is first  # tried again at the next check, still serving version 1
    assert "downloading" in caplog.text and "keeping the current ones" in caplog.text
    # The failed download left nothing behind in the cache.
    assert sorted(p.name for p in (settings.models_cache_dir / LSTM).iterdir()) == ["1"]
    assert first.lstm.bundle.predict(["AAA"], [[[0.0] * len(FEATURES)] * LENGTH])[0].shape == (1, 3)


def test_a_removed_champion_alias_keeps_the_current_pair(settings: Settings, bundles, caplog):
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0)
    register_bundles(settings, bundles)
    first = watcher.current()
    loader.client().delete_registered_model_alias(TRANSFORMER, model_registry.CHAMPION)

    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.models"):
        assert watcher.current() is first
    assert "champion alias gone for 1d models; keeping" in caplog.text


def test_a_new_champion_that_cannot_pair_keeps_the_current_pair(settings: Settings, bundles, tmp_path, caplog):
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0)
    register_bundles(settings, bundles)
    first = watcher.current()
    # A transformer trained with a longer sequence becomes champion alone.
    longer = Path(shutil.copytree(bundles["transformer"], tmp_path / "transformer"))
    manifest = json.loads((longer / "manifest.json").read_text())
    (longer / "manifest.json").write_text(json.dumps({**manifest, "sequence_length": LENGTH + 1}))
    assert register_bundles(settings, {"transformer": longer}) == {TRANSFORMER: "2"}

    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.models"):
        assert watcher.current() is first
    assert "do not take the same input" in caplog.text


def test_a_champion_deleted_while_switching_keeps_the_current_pair(settings: Settings, bundles, monkeypatch):
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0)
    register_bundles(settings, bundles)
    first = watcher.current()
    register_bundles(settings, bundles, champion=True)
    real_dual = loader.dual

    def dual_after_a_concurrent_delete(interval, lstm, transformer):
        loader.client().delete_model_version(LSTM, "2")  # e.g. an operator removing a bad version
        return real_dual(interval, lstm, transformer)

    monkeypatch.setattr(loader, "dual", dual_after_a_concurrent_delete)
    assert watcher.refresh() is first
    assert watcher.current() is first


def test_reports_serving_the_baseline_and_the_recovery_and_promotions(settings: Settings, bundles):
    """The alert engine hears when no champion exists (a warning) or one exists and cannot be
    loaded (critical): either way the scorer serves the momentum baseline; and when it can
    again, and when a new champion takes over."""
    reported = []
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0, report=reported.append)
    assert watcher.current() is None  # no champion at all: the baseline, announced
    assert [(e.kind, e.status, e.severity, e.subject) for e in reported] == [
        ("scorer_baseline", "firing", "warning", "scorer:1d")]
    assert "no champion is registered for the 1d models; serving the momentum baseline" in reported[0].message

    reported.clear()
    register_bundles(settings, bundles)
    source = loader.client().get_model_version(LSTM, "1").source
    moved = Path(url2pathname(urlparse(source).path))
    hidden = moved.with_name(moved.name + ".away")
    moved.rename(hidden)  # its artifacts are gone: the champion cannot be loaded
    assert watcher.current() is None
    assert watcher.current() is None
    assert [(e.kind, e.status, e.severity, e.subject) for e in reported] == [
        ("scorer_baseline", "firing", "critical", "scorer:1d")] * 2
    assert "serving the momentum baseline" in reported[0].message

    hidden.rename(moved)
    reported.clear()
    first = watcher.current()
    assert first is not None
    assert [(e.kind, e.status) for e in reported] == [("scorer_baseline", "resolved")]

    reported.clear()
    register_bundles(settings, bundles, champion=True)
    assert watcher.current().model_version == "2+2"
    assert [(e.kind, e.status, e.severity) for e in reported] == [("model_promoted", "firing", "info"),
                                                                   ("model_promoted", "resolved", "info")]
    assert "replaces version 1+1" in reported[0].message


def test_a_champion_that_fails_to_load_over_a_previous_one_is_reported(settings: Settings, bundles):
    """A new champion whose bundle is not what was registered is refused, the previous pair
    serves on, and the alert engine hears of it at every check until it has passed."""
    reported = []
    loader = ModelLoader(settings)
    watcher = ChampionWatcher(loader, "1d", check_seconds=0, report=reported.append)
    register_bundles(settings, bundles)
    first = watcher.current()
    assert first.model_version == "1+1" and reported == []

    register_bundles(settings, bundles, champion=True)
    source = loader.client().get_model_version(LSTM, "2").source
    onnx = Path(url2pathname(urlparse(source).path)) / "parent.onnx"
    original = onnx.read_bytes()
    onnx.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # one byte changed in the store
    assert watcher.current() is first
    assert watcher.current() is first
    assert [(e.kind, e.status, e.severity, e.subject) for e in reported] == [
        ("model_load_failed", "firing", "critical", "scorer:1d")] * 2
    assert reported[0].message.startswith(f"champion {LSTM}+{TRANSFORMER} version 2+2 could not be loaded")
    assert "refusing to load it" in reported[0].message and reported[0].message.endswith("still serving version 1+1")
    assert not (settings.models_cache_dir / LSTM / "2").exists()  # nothing unverified in the cache

    onnx.write_bytes(original)
    reported.clear()
    assert watcher.current().model_version == "2+2"
    assert [(e.kind, e.status) for e in reported] == [
        ("model_load_failed", "resolved"), ("model_promoted", "firing"), ("model_promoted", "resolved")]
