"""Keras and ONNX Runtime agree; bundles route symbols to their child or the parent."""

from __future__ import annotations

import numpy as np
import pytest
from small_bundles import CHILD, FEATURES, LENGTH, raw_sequences

from tickcast.models import networks, training
from tickcast.models.bundle import CPU, CUDA, BundleError, ModelBundle, execution_providers


@pytest.mark.slow  # trains and exports the session's small bundles (trained_bundles)
@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_keras_and_onnx_runtime_agree(trained_bundles, arch):
    """Both architectures, fit briefly (weights not at initialisation), as bundles
    (``trained_bundles``: tests/models/conftest.py)."""
    parent, child, scaler, directory, _ = trained_bundles[arch]
    bundle = ModelBundle(directory, providers=[CPU])
    raw = raw_sequences(np.random.default_rng(2), 300)
    symbols = np.array([CHILD, "BBB", "CCC"] * 100)
    probabilities, quantiles = bundle.predict(symbols, raw)

    scaled = np.nan_to_num(scaler.transform(raw))
    for symbol, model in ((CHILD, child), ("BBB", parent), ("CCC", parent)):
        rows = symbols == symbol
        keras_p, keras_q = training.predict(model, scaled[rows])
        np.testing.assert_allclose(probabilities[rows], keras_p, atol=1e-5, rtol=0)
        np.testing.assert_allclose(quantiles[rows], keras_q, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (quantiles[:, 0] <= quantiles[:, 1]).all() and (quantiles[:, 1] <= quantiles[:, 2]).all()
    # The child really differs from the parent (else routing would be untested).
    assert not np.allclose(training.predict(child, scaled[:5])[0], training.predict(parent, scaled[:5])[0])


@pytest.mark.slow  # trained_bundles
@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_rows_on_the_earnings_route_are_served_by_the_earnings_network(trained_bundles, arch):
    parent, child, scaler, directory, earnings = trained_bundles[arch]
    bundle = ModelBundle(directory, providers=[CPU])
    assert bundle.manifest["routes"] == {"earnings": "earnings.onnx"}
    raw = raw_sequences(np.random.default_rng(4), 8)
    symbols = np.array([CHILD, "BBB"] * 4)
    routes = np.array(["earnings", "earnings", "normal", "normal", "earnings", "normal", "normal", "earnings"])
    probabilities, quantiles = bundle.predict(symbols, raw, routes)

    scaled = np.nan_to_num(scaler.transform(raw))
    on_earnings = routes == "earnings"
    for rows, model in ((on_earnings, earnings), (~on_earnings & (symbols == CHILD), child),
                        (~on_earnings & (symbols == "BBB"), parent)):
        keras_p, keras_q = training.predict(model, scaled[rows])
        np.testing.assert_allclose(probabilities[rows], keras_p, atol=1e-5, rtol=0)
        np.testing.assert_allclose(quantiles[rows], keras_q, atol=1e-5, rtol=0)
    assert not np.allclose(training.predict(earnings, scaled[:3])[0], training.predict(parent, scaled[:3])[0])
    # Without routes every row is a normal day; a route the bundle has no network for is served as one.
    unrouted = bundle.predict(symbols, raw)
    unknown = bundle.predict(symbols, raw, np.where(on_earnings, "merger", "normal"))
    keras_normal = np.where((symbols == CHILD)[:, None], training.predict(child, scaled)[0],
                            training.predict(parent, scaled)[0])
    for p, _ in (unrouted, unknown):
        np.testing.assert_allclose(p, keras_normal, atol=1e-5, rtol=0)
    assert bundle.served_routes(routes).tolist() == routes.tolist()


@pytest.mark.slow  # trained_bundles
def test_bundle_manifest_and_errors(trained_bundles, tmp_path):
    _, _, _, directory, _ = trained_bundles["lstm"]
    bundle = ModelBundle(directory, providers=[CPU])
    assert bundle.architecture == "lstm" and bundle.features == FEATURES
    assert bundle.manifest["feature_set_version"] == "v1" and list(bundle.children) == [CHILD]
    assert (directory / "keras" / "parent.keras").is_file() and (directory / "config.yaml").is_file()
    assert bundle.active_providers == [CPU]
    with pytest.raises(BundleError, match="expected sequences of shape"):
        bundle.predict([CHILD], np.zeros((1, LENGTH + 1, len(FEATURES))))
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
