"""Keras and ONNX Runtime agree; bundles route symbols to their child or the parent."""

from __future__ import annotations

import numpy as np
import pytest

from tickcast.models import networks, training
from tickcast.models.bundle import CPU, CUDA, BundleError, ModelBundle, execution_providers, write_bundle
from tickcast.models.dataset import Scaler
from tickcast.models.experiment import ExperimentConfig

FEATURES = ["return_1d", "return_5d", "volatility_20d", "rsi_14"]
LENGTH = 6


def _config(**overrides) -> ExperimentConfig:
    return ExperimentConfig(name="onnx", symbols=["AAA"], start="2020-01-01", end="2021-01-01",
                            features=FEATURES, training={"sequence_length": LENGTH, "epochs": 2},
                            lstm={"units": 8, "layers": 2}, transformer={"units": 8, "ff_units": 16, "layers": 2},
                            **overrides)


def _data(rng, n: int) -> training.TrainingData:
    x = rng.normal(size=(n, LENGTH, len(FEATURES))).astype(np.float32)
    return training.TrainingData(x, rng.integers(0, 3, n).astype(float), rng.normal(0, 0.01, n))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both architectures fit briefly (so weights are not at initialisation), as bundles."""
    rng = np.random.default_rng(1)
    config = _config()
    training.seed_everything(1)
    raw = rng.normal([0, 0, 0.2, 50], [0.01, 0.03, 0.05, 10], size=(500, len(FEATURES)))
    scaler = Scaler.fit(raw, FEATURES)
    out = {}
    for arch in ("lstm", "transformer"):
        parent = training.fit_new(arch, config, _data(rng, 256), _data(rng, 64), 0.01).model
        child = training.fit_child(parent, arch, config, _data(rng, 64), _data(rng, 32), 0.01).model
        directory = write_bundle(tmp_path_factory.mktemp(arch) / "bundle", arch=arch, config=config,
                                 scaler=scaler, parent=parent, children={"AAA": child})
        out[arch] = (parent, child, scaler, directory)
    return out


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_keras_and_onnx_runtime_agree(trained, arch):
    parent, child, scaler, directory = trained[arch]
    bundle = ModelBundle(directory, providers=[CPU])
    rng = np.random.default_rng(2)
    raw = rng.normal([0, 0, 0.2, 50], [0.01, 0.03, 0.05, 10], size=(300, LENGTH, len(FEATURES)))
    symbols = np.array(["AAA", "BBB", "CCC"] * 100)
    probabilities, quantiles = bundle.predict(symbols, raw)

    scaled = np.nan_to_num(scaler.transform(raw))
    for symbol, model in (("AAA", child), ("BBB", parent), ("CCC", parent)):
        rows = symbols == symbol
        keras_p, keras_q = training.predict(model, scaled[rows])
        np.testing.assert_allclose(probabilities[rows], keras_p, atol=1e-5, rtol=0)
        np.testing.assert_allclose(quantiles[rows], keras_q, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (quantiles[:, 0] <= quantiles[:, 1]).all() and (quantiles[:, 1] <= quantiles[:, 2]).all()
    # The child really differs from the parent (else routing would be untested).
    assert not np.allclose(training.predict(child, scaled[:5])[0], training.predict(parent, scaled[:5])[0])


def test_bundle_manifest_and_errors(trained, tmp_path):
    _, _, _, directory = trained["lstm"]
    bundle = ModelBundle(directory, providers=[CPU])
    assert bundle.architecture == "lstm" and bundle.features == FEATURES
    assert bundle.manifest["feature_set_version"] == "v1" and list(bundle.children) == ["AAA"]
    assert (directory / "keras" / "parent.keras").is_file() and (directory / "config.yaml").is_file()
    assert bundle.active_providers == [CPU]
    with pytest.raises(BundleError, match="expected sequences of shape"):
        bundle.predict(["AAA"], np.zeros((1, LENGTH + 1, len(FEATURES))))
    with pytest.raises(BundleError, match="not a model bundle"):
        ModelBundle(tmp_path)


def test_cuda_provider_first_when_available():
    assert execution_providers([CUDA, CPU]) == [CUDA, CPU]
    assert execution_providers([CPU]) == [CPU]
    # This machine's onnxruntime build: CPU only, and that is what a bundle picks.
    assert execution_providers()[-1] == CPU


def test_quantile_head_never_crosses():
    model = networks.build_lstm(LENGTH, len(FEATURES), return_scale=0.02, units=4)
    x = np.random.default_rng(3).normal(size=(200, LENGTH, len(FEATURES))).astype(np.float32) * 50
    _, quantiles = training.predict(model, x)
    assert (np.diff(quantiles, axis=1) >= 0).all()
