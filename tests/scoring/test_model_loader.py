"""ModelLoader opens a registered version only when its files are those its registration
recorded (a content hash on the version): a corrupt copy in the cache is discarded and
downloaded again, a tampered artifact in the store is refused, and a version registered
before the hash existed still loads, with a warning. Real MLflow store, real ONNX bundles."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from tickcast.core.errors import Unavailable
from tickcast.core.settings import Settings
from tickcast.models import registry
from tickcast.models.bundle import BundleIntegrityError, bundle_digest
from tickcast.models.untrained import register_bundles
from tickcast.scoring.models import ModelLoader
from tickcast.scoring.on_demand import OnDemandScorer

LSTM = "tickcast-lstm-1d"
ROW = [[[0.0, 0.0]] * 3]  # one sequence of the `untrained_pair` bundles (2 features, 3 steps)


def _stored(loader: ModelLoader, name: str, version: str) -> Path:
    source = loader.client().get_model_version(name, version).source
    return Path(url2pathname(urlparse(source).path))


def _flip_last_byte(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    return original


def test_registration_records_the_bundles_content_hash(settings: Settings, untrained_pair):
    loader = ModelLoader(settings)
    register_bundles(settings, untrained_pair)
    tags = loader.client().get_model_version(LSTM, "1").tags
    assert tags[registry.DIGEST_TAG] == bundle_digest(untrained_pair["lstm"])
    assert bundle_digest(_stored(loader, LSTM, "1")) == tags[registry.DIGEST_TAG]
    # Any change of content or of a name changes the hash.
    assert bundle_digest(untrained_pair["lstm"]) != bundle_digest(untrained_pair["transformer"])


def test_a_corrupt_onnx_file_in_the_cache_is_discarded_and_downloaded_again(settings: Settings, untrained_pair,
                                                                              caplog):
    register_bundles(settings, untrained_pair)
    ModelLoader(settings).load(LSTM, "1")  # a first process fills the cache
    cached = settings.models_cache_dir / LSTM / "1" / "parent.onnx"
    stored = _flip_last_byte(cached)  # the cached copy rots (the manifest is intact)

    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.models"):
        deployed = ModelLoader(settings).load(LSTM, "1")  # the next process
    assert "the cached bundle of tickcast-lstm-1d version 1 does not match its registered content hash" in caplog.text
    assert cached.read_bytes() == stored
    assert deployed.bundle.directory == settings.models_cache_dir / LSTM / "1"
    assert deployed.bundle.predict(["AAA"], ROW)[0].shape == (1, 3)
    # Only the version itself is left in the cache: the discarded copy is gone.
    assert [p.name for p in (settings.models_cache_dir / LSTM).iterdir()] == ["1"]


def test_a_tampered_artifact_in_the_store_is_refused(settings: Settings, untrained_pair):
    register_bundles(settings, untrained_pair)
    loader = ModelLoader(settings)
    _flip_last_byte(_stored(loader, LSTM, "1") / "parent.onnx")

    with pytest.raises(BundleIntegrityError, match="tickcast-lstm-1d version 1 is not the bundle that was registered"):
        loader.load(LSTM, "1")
    # Nothing unverified was left in the cache for a later load to trust.
    assert list((settings.models_cache_dir / LSTM).iterdir()) == []
    # On demand (the API, the dashboard) that is a service unavailable, not a crash.
    with pytest.raises(Unavailable, match="refusing to load it"):
        OnDemandScorer(settings, loader).dual("1d", "1+1")


def test_a_version_registered_before_the_hash_loads_with_one_warning(settings: Settings, untrained_pair, caplog):
    register_bundles(settings, untrained_pair)
    loader = ModelLoader(settings)
    loader.client().delete_model_version_tag(LSTM, "1", registry.DIGEST_TAG)

    with caplog.at_level(logging.WARNING, logger="tickcast.scoring.models"):
        dual = loader.dual("1d", "1", "1")
        assert loader.dual("1d", "1", "1").lstm is dual.lstm
        other = ModelLoader(settings)
        other.load(LSTM, "1")
    warned = [r.getMessage() for r in caplog.records if "without a content hash" in r.getMessage()]
    # Once per loader (a process), however often it is asked for the version.
    assert warned == ["tickcast-lstm-1d version 1 was registered without a content hash (before bundles were "
                      "verified): it is loaded unverified; register it again to have it checked"] * 2
    assert dual.lstm.bundle.predict(["AAA"], ROW)[0].shape == (1, 3)
