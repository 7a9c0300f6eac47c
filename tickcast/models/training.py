"""Fitting the networks: from scratch, the parent on the index, children from the parent.

Inputs are ``Sequences`` (already scaled) with their targets: the class label and the
forward return. Early stopping watches the validation slice, which always precedes the
test fold (see ``splits``). Keras is imported inside the functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from tickcast.models import networks
from tickcast.models.dataset import Scaler, build_sequences
from tickcast.models.experiment import ArchitectureConfig, ExperimentConfig

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    x: np.ndarray
    label: np.ndarray
    forward_return: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def targets(self) -> dict[str, np.ndarray]:
        return {"direction": self.label.astype(np.int32), "quantiles": self.forward_return.astype(np.float32)}


class SequenceSet:
    """The scaled sequences of a labelled frame's ``eligible`` rows, cut by row masks into
    training data: one build per scaler, then any number of slices (index, per symbol, ...)."""

    def __init__(self, frame, features: list[str], length: int, scaler: Scaler, eligible: np.ndarray):
        self.sequences = build_sequences(frame, features, length, scaler, mask=eligible)
        self.label = frame["label"].to_numpy(dtype=float)
        self.forward = frame["forward_return"].to_numpy(dtype=float)

    def rows(self, mask: np.ndarray) -> np.ndarray:
        """Frame positions of the sequences whose last row is in ``mask``."""
        return self.sequences.rows[mask[self.sequences.rows]]

    def select(self, mask: np.ndarray) -> TrainingData:
        keep = mask[self.sequences.rows]
        rows = self.sequences.rows[keep]
        return TrainingData(self.sequences.x[keep], self.label[rows], self.forward[rows])


@dataclass
class FitResult:
    model: object
    epochs: int
    seconds: float
    best_val_loss: float | None


def return_scale(forward_returns: np.ndarray) -> float:
    """The spread the quantile head is scaled by: the training fold's forward-return std."""
    spread = float(np.nanstd(forward_returns))
    return spread if np.isfinite(spread) and spread > 0 else 0.01


def seed_everything(seed: int) -> None:
    networks.keras_module().utils.set_random_seed(seed)


def _fit(model, train: TrainingData, validation: TrainingData, *, epochs: int, batch_size: int,
         patience: int) -> FitResult:
    keras = networks.keras_module()
    started = time.perf_counter()
    callbacks = []
    fit_validation = None
    if len(validation):
        fit_validation = (validation.x, validation.targets())
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True))
    history = model.fit(train.x, train.targets(), validation_data=fit_validation, epochs=epochs,
                        batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    val = history.history.get("val_loss")
    return FitResult(model, len(history.history["loss"]), time.perf_counter() - started,
                     float(np.min(val)) if val else None)


def fit_new(arch: str, config: ExperimentConfig, train: TrainingData, validation: TrainingData,
            scale: float) -> FitResult:
    """A freshly initialised network of ``arch`` trained on ``train``."""
    if not len(train):
        raise ValueError(f"no training sequences for the {arch} model")
    kwargs: ArchitectureConfig = getattr(config, arch)
    model = networks.BUILDERS[arch](train.x.shape[1], train.x.shape[2], return_scale=scale,
                                    **kwargs.model_dump())
    networks.compile_model(model, learning_rate=kwargs.learning_rate,
                           quantile_weight=kwargs.quantile_weight, return_scale=scale)
    t = config.training
    return _fit(model, train, validation, epochs=t.epochs, batch_size=t.batch_size, patience=t.patience)


def fit_child(parent, arch: str, config: ExperimentConfig, train: TrainingData, validation: TrainingData,
              scale: float) -> FitResult:
    """A copy of ``parent`` adapted to one symbol: heads only (``freeze``) or every layer at a
    lower learning rate (``finetune``)."""
    return _fine_tune(parent, arch, config, train, validation, scale, learning_rate=config.transfer.child_learning_rate,
                      epochs=config.transfer.child_epochs, freeze=config.transfer.strategy == "freeze")


def fit_earnings(parent, arch: str, config: ExperimentConfig, train: TrainingData, validation: TrainingData,
                 scale: float) -> FitResult:
    """The earnings-day model: a copy of ``parent`` fine-tuned on earnings-window rows only."""
    return _fine_tune(parent, arch, config, train, validation, scale, learning_rate=config.routing.learning_rate,
                      epochs=config.routing.epochs)


def _fine_tune(parent, arch: str, config: ExperimentConfig, train: TrainingData, validation: TrainingData,
               scale: float, *, learning_rate: float, epochs: int, freeze: bool = False) -> FitResult:
    """A copy of ``parent`` trained further on ``train`` (the copy as it is when there is none)."""
    model = networks.clone_with_weights(parent)
    if freeze:
        networks.freeze_body(model)
    kwargs: ArchitectureConfig = getattr(config, arch)
    networks.compile_model(model, learning_rate=learning_rate, quantile_weight=kwargs.quantile_weight,
                           return_scale=scale)
    if not len(train):
        return FitResult(model, 0, 0.0, None)
    t = config.training
    return _fit(model, train, validation, epochs=epochs, batch_size=t.batch_size, patience=t.patience)


def predict(model, x: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, 3), quantiles (n, 3)) from a Keras model."""
    if x.shape[0] == 0:
        return np.empty((0, 3)), np.empty((0, 3))
    # Calling the model directly: ``model.predict`` builds a new tf.function per model and
    # warns about retracing when many small models (children, folds) each predict once.
    parts = [model(x[i: i + batch_size], training=False) for i in range(0, x.shape[0], batch_size)]
    direction = np.concatenate([np.asarray(p[0]) for p in parts])
    quantiles = np.concatenate([np.asarray(p[1]) for p in parts])
    return direction.astype(float), quantiles.astype(float)
