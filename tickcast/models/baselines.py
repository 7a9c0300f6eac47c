"""The floors a model must clear, fit on exactly the training rows the models get.

- ``no_change``: always NEUTRAL with zero expected return; probabilities are the training
  fold's class frequencies and the quantiles its forward-return quantiles.
- ``momentum``: the sign of the last ``lookback`` bars' return; probabilities and return
  quantiles are those the training fold showed after the same sign.
- ``logistic``: multinomial logistic regression on the current bar's scaled features; the
  expected return is the probability-weighted mean forward return of each class.
- ``lightgbm``: gradient-boosted trees on the same features, a classifier plus p10/p50/p90
  quantile regressors, stopped early on the validation slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tickcast.models.dataset import Scaler
from tickcast.models.labels import DOWN, NEUTRAL, UP
from tickcast.models.metrics import Predictions

QUANTILES = (0.1, 0.5, 0.9)


def _class_frequencies(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels.astype(int), minlength=3).astype(float)
    return counts / counts.sum()


def _return_quantiles(returns: np.ndarray) -> np.ndarray:
    returns = returns[np.isfinite(returns)]
    return np.quantile(returns, QUANTILES) if returns.size else np.zeros(3)


def no_change(frame: pd.DataFrame, train: np.ndarray, test_rows: np.ndarray) -> Predictions:
    labels = frame["label"].to_numpy()[train]
    probabilities = np.tile(_class_frequencies(labels), (test_rows.size, 1))
    quantiles = np.tile(_return_quantiles(frame["forward_return"].to_numpy()[train]), (test_rows.size, 1))
    quantiles[:, 1] = 0.0
    return Predictions(test_rows, probabilities, quantiles, np.full(test_rows.size, NEUTRAL))


def trailing_return(frame: pd.DataFrame, lookback: int) -> np.ndarray:
    close = frame["close"]
    return (close / close.groupby(frame["symbol"], sort=False).shift(lookback) - 1.0).to_numpy()


def momentum(frame: pd.DataFrame, train: np.ndarray, test_rows: np.ndarray, lookback: int) -> Predictions:
    sign = np.sign(np.nan_to_num(trailing_return(frame, lookback)))
    labels = frame["label"].to_numpy()
    forward = frame["forward_return"].to_numpy(dtype=float)
    probabilities = np.empty((test_rows.size, 3))
    quantiles = np.empty((test_rows.size, 3))
    fallback_p, fallback_q = _class_frequencies(labels[train]), _return_quantiles(forward[train])
    for s in (-1.0, 0.0, 1.0):
        here = sign[test_rows] == s
        seen = train & (sign == s)
        probabilities[here] = _class_frequencies(labels[seen]) if seen.sum() >= 10 else fallback_p
        quantiles[here] = _return_quantiles(forward[seen]) if seen.sum() >= 10 else fallback_q
    predicted = np.where(sign[test_rows] > 0, UP, np.where(sign[test_rows] < 0, DOWN, NEUTRAL))
    return Predictions(test_rows, probabilities, quantiles, predicted)


def _current_features(frame: pd.DataFrame, features: list[str], scaler: Scaler, rows: np.ndarray) -> np.ndarray:
    values = scaler.transform(frame[features].to_numpy(dtype=float)[rows])
    return np.nan_to_num(values)  # missing -> the training mean


def _full_probabilities(model, x: np.ndarray) -> np.ndarray:
    """Three columns even when a class never occurred in training."""
    out = np.zeros((x.shape[0], 3))
    out[:, model.classes_.astype(int)] = model.predict_proba(x)
    return out


def _residual_band(frame: pd.DataFrame, train_rows: np.ndarray, expected_train: np.ndarray) -> np.ndarray:
    residuals = frame["forward_return"].to_numpy(dtype=float)[train_rows] - expected_train
    return np.quantile(residuals, QUANTILES) - np.quantile(residuals, 0.5)


def logistic(frame: pd.DataFrame, train: np.ndarray, test_rows: np.ndarray, features: list[str],
             scaler: Scaler, seed: int) -> Predictions:
    from sklearn.linear_model import LogisticRegression

    train_rows = np.flatnonzero(train)
    x_train = _current_features(frame, features, scaler, train_rows)
    y_train = frame["label"].to_numpy()[train_rows].astype(int)
    model = LogisticRegression(max_iter=500, C=1.0, random_state=seed).fit(x_train, y_train)
    forward = frame["forward_return"].to_numpy(dtype=float)
    class_means = np.array([forward[train_rows][y_train == c].mean() if (y_train == c).any() else 0.0
                            for c in (DOWN, NEUTRAL, UP)])
    p_train = _full_probabilities(model, x_train)
    band = _residual_band(frame, train_rows, p_train @ class_means)
    p_test = _full_probabilities(model, _current_features(frame, features, scaler, test_rows))
    expected = p_test @ class_means
    return Predictions(test_rows, p_test, expected[:, None] + band[None, :])


def lightgbm(frame: pd.DataFrame, train: np.ndarray, validation: np.ndarray, test_rows: np.ndarray,
             features: list[str], scaler: Scaler, seed: int) -> Predictions:
    import lightgbm as lgb

    train_rows, val_rows = np.flatnonzero(train), np.flatnonzero(validation)
    x_train = _current_features(frame, features, scaler, train_rows)
    x_val = _current_features(frame, features, scaler, val_rows)
    x_test = _current_features(frame, features, scaler, test_rows)
    labels = frame["label"].to_numpy()
    forward = frame["forward_return"].to_numpy(dtype=float)
    common: dict[str, Any] = dict(n_estimators=300, learning_rate=0.05, num_leaves=15, min_child_samples=40,
                  subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                  n_jobs=2, verbose=-1)
    stop: list[Any] = [lgb.early_stopping(20, verbose=False)]
    classifier = lgb.LGBMClassifier(objective="multiclass", **common)
    classifier.fit(x_train, labels[train_rows].astype(int), eval_X=x_val, eval_y=labels[val_rows].astype(int),
                   callbacks=stop)
    quantiles = []
    for q in QUANTILES:
        regressor = lgb.LGBMRegressor(objective="quantile", alpha=q, **common)
        regressor.fit(x_train, forward[train_rows], eval_X=x_val, eval_y=forward[val_rows], callbacks=stop)
        quantiles.append(regressor.predict(x_test))
    # Separately fit quantiles can cross; sorting restores p10 <= p50 <= p90.
    return Predictions(test_rows, _full_probabilities(classifier, x_test), np.sort(np.column_stack(quantiles), axis=1))
