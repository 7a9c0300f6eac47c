"""One pair of small model bundles (LSTM and Transformer, a parent, a child for AAA and an
earnings-day network) for the tests that need real ONNX files: Keras/ONNX agreement, routing,
explanations.

Exporting to ONNX is the expensive part (several seconds per network), so the bundles are
built once per session (``small_bundles`` in this directory's conftest) and shared read-only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = ["return_1d", "return_5d", "volatility_20d", "rsi_14", "macd"]
# A real (non-identity) scaler: "the mean" of a feature then differs from 0 in raw units.
MEAN = np.array([0.001, 0.004, 0.25, 50.0, 0.1])
SCALE = np.array([0.02, 0.04, 0.1, 10.0, 0.5])
LENGTH = 4
CHILD = "AAA"


def raw_sequences(rng: np.random.Generator, n: int, spread: float = 1.0) -> np.ndarray:
    """``n`` raw (unscaled) feature sequences around the scaler's mean."""
    return MEAN + SCALE * rng.normal(0.0, spread, size=(n, LENGTH, len(FEATURES)))


def build(directory: Path) -> dict[str, tuple[object, object, object, Path, object]]:
    """arch -> (parent, child, scaler, bundle directory, earnings-day network).

    Both architectures with two stacked layers, fit briefly (so weights are not at
    initialisation) on random data; the child and the earnings-day network are fit from the
    parent, as in training.
    """
    from tickcast.models import training
    from tickcast.models.bundle import write_bundle
    from tickcast.models.dataset import Scaler
    from tickcast.models.experiment import ExperimentConfig

    def data(n: int) -> training.TrainingData:
        x = rng.normal(size=(n, LENGTH, len(FEATURES))).astype(np.float32)
        return training.TrainingData(x, rng.integers(0, 3, n).astype(float), rng.normal(0, 0.01, n))

    config = ExperimentConfig(name="small", symbols=[CHILD], start="2020-01-01", end="2021-01-01",
                              features=FEATURES, training={"sequence_length": LENGTH, "epochs": 2},
                              routing={"earnings": True, "epochs": 2, "learning_rate": 0.05},
                              lstm={"units": 8, "layers": 2},
                              transformer={"units": 8, "ff_units": 16, "heads": 2, "layers": 2})
    scaler = Scaler(list(FEATURES), MEAN, SCALE)
    rng = np.random.default_rng(1)
    training.seed_everything(1)
    out = {}
    for arch in ("lstm", "transformer"):
        parent = training.fit_new(arch, config, data(256), data(64), 0.01).model
        child = training.fit_child(parent, arch, config, data(64), data(32), 0.01).model
        earnings = training.fit_earnings(parent, arch, config, data(64), data(32), 0.01).model
        bundle = write_bundle(Path(directory) / arch, arch=arch, config=config, scaler=scaler,
                              parent=parent, children={CHILD: child}, earnings=earnings)
        out[arch] = (parent, child, scaler, bundle, earnings)
    return out
