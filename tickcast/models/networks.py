"""The two architectures: an LSTM and a Transformer encoder over sequences of feature vectors.

Both end in the same two heads:

- ``direction``: softmax over (down, neutral, up), trained with cross-entropy;
- ``quantiles``: p10, p50, p90 of the forward return, trained with the pinball loss. The
  median comes from one unit and the two tails from softplus distances below and above it,
  so the quantiles can never cross. A fixed ``Rescaling`` by the training fold's
  forward-return spread keeps the network's own outputs near unit size.

Only built-in Keras layers are used, so ``model.export(format="onnx")`` and loading a
saved model need nothing of ours. TensorFlow is imported inside the functions: importing
this module costs nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import keras

Architecture = Literal["lstm", "transformer"]
# The two networks; the dual model pairs one of each.
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)
QUANTILE_LEVELS = (0.1, 0.5, 0.9)
HEAD_PREFIX = "head_"


def keras_module():
    # Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _heads(keras, hidden, return_scale: float) -> list:
    layers = keras.layers
    direction = layers.Dense(3, activation="softmax", name="direction")(hidden)
    median = layers.Dense(1, name=f"{HEAD_PREFIX}median")(hidden)
    below = layers.Dense(1, activation="softplus", name=f"{HEAD_PREFIX}below")(hidden)
    above = layers.Dense(1, activation="softplus", name=f"{HEAD_PREFIX}above")(hidden)
    p10 = layers.Subtract(name=f"{HEAD_PREFIX}p10")([median, below])
    p90 = layers.Add(name=f"{HEAD_PREFIX}p90")([median, above])
    stacked = layers.Concatenate(name=f"{HEAD_PREFIX}stack")([p10, median, p90])
    quantiles = layers.Rescaling(scale=float(return_scale), name="quantiles")(stacked)
    return [direction, quantiles]


def build_lstm(sequence_length: int, n_features: int, *, return_scale: float, units: int = 32,
               layers: int = 1, dropout: float = 0.1, **_unused) -> keras.Model:
    keras = keras_module()
    inputs = keras.Input(shape=(sequence_length, n_features), name="features")
    x = inputs
    for i in range(layers):
        x = keras.layers.LSTM(units, return_sequences=i < layers - 1, name=f"lstm_{i}")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, _heads(keras, x, return_scale), name="lstm")


def _positions(sequence_length: int, width: int) -> np.ndarray:
    """Sinusoidal position encoding (Vaswani et al.), a constant: nothing to learn or export."""
    position = np.arange(sequence_length)[:, None]
    rates = 1.0 / np.power(10_000.0, (2 * (np.arange(width)[None, :] // 2)) / width)
    angles = position * rates
    return np.where(np.arange(width)[None, :] % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)


def build_transformer(sequence_length: int, n_features: int, *, return_scale: float, units: int = 32,
                      layers: int = 1, heads: int = 2, ff_units: int = 64, dropout: float = 0.1,
                      **_unused) -> keras.Model:
    keras = keras_module()
    kl = keras.layers
    inputs = keras.Input(shape=(sequence_length, n_features), name="features")
    x = kl.Dense(units, name="embed")(inputs)
    positions = _positions(sequence_length, units)
    x = x + positions
    for i in range(layers):
        attended = kl.MultiHeadAttention(num_heads=heads, key_dim=max(units // heads, 1), dropout=dropout,
                                         name=f"attention_{i}")(x, x)
        x = kl.LayerNormalization(epsilon=1e-6, name=f"norm_a_{i}")(x + kl.Dropout(dropout)(attended))
        ff = kl.Dense(ff_units, activation="relu", name=f"ff_in_{i}")(x)
        ff = kl.Dense(units, name=f"ff_out_{i}")(ff)
        x = kl.LayerNormalization(epsilon=1e-6, name=f"norm_f_{i}")(x + kl.Dropout(dropout)(ff))
    # The newest bar's encoding, which has attended to the whole window, speaks for it.
    last = x[:, -1, :]
    last = kl.Dropout(dropout, name="dropout")(last)
    return keras.Model(inputs, _heads(keras, last, return_scale), name="transformer")


BUILDERS = {"lstm": build_lstm, "transformer": build_transformer}


def pinball_loss(levels: tuple[float, ...] = QUANTILE_LEVELS, scale: float = 1.0):
    """Mean pinball loss over the quantile columns, in units of ``scale`` (the return spread)."""
    keras = keras_module()
    ops = keras.ops
    tau = np.asarray(levels, dtype=np.float32)[None, :]

    def pinball(y_true, y_pred):
        error = (ops.reshape(y_true, (-1, 1)) - y_pred) / scale
        return ops.mean(ops.maximum(tau * error, (tau - 1.0) * error), axis=-1)

    return pinball


def compile_model(model, *, learning_rate: float, quantile_weight: float, return_scale: float) -> None:
    keras = keras_module()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=1.0),
        loss={"direction": "sparse_categorical_crossentropy", "quantiles": pinball_loss(scale=return_scale)},
        loss_weights={"direction": 1.0, "quantiles": float(quantile_weight)},
    )


def freeze_body(model) -> None:
    """The ``freeze`` transfer strategy: only the heads keep learning."""
    for layer in model.layers:
        layer.trainable = layer.name.startswith(HEAD_PREFIX) or layer.name in ("direction", "quantiles")


def clone_with_weights(model):
    keras = keras_module()
    # from_config of the architecture alone: clone_model would also rebuild the compiled
    # loss, which is a closure Keras cannot deserialize.
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone
