"""Why the ensemble leans the way it does: occlusion attributions per feature, and a short text.

For one symbol's raw sequence, each feature's whole column is replaced by its training mean
(what the scaler turns into 0: "no information" to the network) and the ensemble is run
again. A feature's contribution is the actual output minus the occluded one, for

- the direction score, P(up) - P(down) of the ensemble (the mean of the models'
  probabilities, as served), and
- the expected return, the ensemble's p50 (the mean of the models' p50s).

All F occlusions and the actual input go to each bundle as one batch of F + 1 sequences,
so an explanation costs one ``predict`` call per model. Occlusion is not additive: the
contributions need not sum to the score, and correlated features (the MACD family, the
return horizons) can each look small while jointly mattering.

The text is composed from the numbers alone, so the same input always reads the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tickcast.models.bundle import ModelBundle
from tickcast.models.labels import DOWN, UP

METHOD = "occlusion"

# Below this the score's two-decimal value is too close to even to call a direction.
LEAN = 0.05
# A driver moving the score by less than one point is not worth naming on its own.
TINY = 0.01

# The catalogue's descriptions are formulas (for whoever computes the features); readers of
# an explanation need names like these instead.
_LABELS = {
    "dollar_volume": "dollar volume",
    "rsi_14": "RSI(14)",
    "macd": "MACD",
    "macd_signal": "MACD signal",
    "macd_hist": "MACD histogram",
    "sma_50_200_cross": "SMA 50/200 cross",
    "bollinger_position": "Bollinger position",
    "atr_14": "ATR(14)",
    "market_beta": "market beta",
    "market_return": "market return",
    "market_volatility": "market volatility",
    "minute_of_hour": "minute of hour",
    "hour_of_day": "hour of day",
    "day_of_week": "day of week",
}
_WINDOWED = re.compile(r"^(return|volatility|volume_ratio)_(\d+)d$")
_PERCENT = re.compile(r"^(return_\d+d|market_return)$")


@dataclass(frozen=True)
class Attribution:
    feature: str
    value: float  # the feature's newest raw value in the sequence (nan when missing)
    baseline: float  # what the column was replaced with: the training mean
    direction: float  # contribution to the ensemble's P(up) - P(down)
    expected_return: float  # contribution to the ensemble's p50


@dataclass(frozen=True)
class Explanation:
    symbol: str
    method: str
    score: float  # ensemble P(up) - P(down) for the actual input
    expected_return: float  # ensemble p50 for the actual input
    attributions: list[Attribution]  # by |direction|, largest first
    text: str


def label(feature: str) -> str:
    """A reader's name for a feature ("20-day volatility"); the name itself when unknown."""
    if feature in _LABELS:
        return _LABELS[feature]
    windowed = _WINDOWED.match(feature)
    if windowed:
        kind, days = windowed.groups()
        return f"{days}-day {kind.replace('_', ' ')}"
    return feature


def format_value(feature: str, value: float) -> str:
    """A raw feature value as the text shows it: "at 71.2", "at +1.3%", or "missing"."""
    if value is None or math.isnan(value):
        return "missing"
    if _PERCENT.match(feature):
        return f"at {_signed(100.0 * value, 2)}%"
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"at {value / 1e9:.1f}B"
    if magnitude >= 1e6:
        return f"at {value / 1e6:.1f}M"
    if magnitude >= 1e3:
        return f"at {value:,.0f}"
    return f"at {value:.3g}"


def explain(bundles: Sequence[ModelBundle], symbol: str, raw: np.ndarray, *, top: int = 3,
            route: str | None = None) -> Explanation:
    """Occlusion attributions of ``bundles``' ensemble for one symbol's raw (L, F) sequence,
    columns in ``bundles[0].features`` order, and a 1-3 sentence summary naming up to
    ``top`` drivers. ``route`` (e.g. ``earnings``) explains the network that serves that route."""
    bundles = list(bundles)
    features = _check(bundles, raw, top)
    raw = np.asarray(raw, dtype=float)
    n = len(features)
    columns = np.arange(n)
    scores = np.zeros(n + 1)
    medians = np.zeros(n + 1)
    for bundle in bundles:
        # Row 0 is the actual input; row 1 + j has column j at this model's own training mean,
        # so each network sees exactly 0 there whatever the other's scaler says.
        batch = np.repeat(raw[None], n + 1, axis=0)
        batch[columns + 1, :, columns] = bundle.scaler.mean[:, None]
        probabilities, quantiles = bundle.predict([symbol] * (n + 1), batch, None if route is None else [route] * (n + 1))
        score = probabilities[:, UP].astype(float) - probabilities[:, DOWN].astype(float)
        median = quantiles[:, 1].astype(float)
        # A column already at the mean (or missing, which scales to 0 too) leaves the network's
        # input unchanged; its contribution is 0 by definition, not whatever last-bit difference
        # a batched kernel produces for another row position.
        prepared = bundle.prepare(batch)
        unchanged = np.concatenate([[True], (prepared[1:] == prepared[:1]).all(axis=(1, 2))])
        score[unchanged] = score[0]
        median[unchanged] = median[0]
        scores += score
        medians += median
    scores /= len(bundles)
    medians /= len(bundles)
    baselines = np.mean([bundle.scaler.mean for bundle in bundles], axis=0)
    attributions = [
        Attribution(feature=name, value=float(raw[-1, j]), baseline=float(baselines[j]),
                    direction=float(scores[0] - scores[j + 1]),
                    expected_return=float(medians[0] - medians[j + 1]))
        for j, name in enumerate(features)
    ]
    # Stable: ties keep the feature order, so equal inputs always read the same.
    attributions.sort(key=lambda a: -abs(a.direction))
    score, expected = float(scores[0]), float(medians[0])
    return Explanation(symbol=symbol, method=METHOD, score=score, expected_return=expected,
                       attributions=attributions, text=summarise(score, expected, attributions, top=top))


def summarise(score: float, expected_return: float, attributions: Sequence[Attribution], *, top: int = 3) -> str:
    """The explanation's text, from its numbers (attributions sorted, largest first)."""
    if score >= LEAN:
        lean = "Leaning up"
    elif score <= -LEAN:
        lean = "Leaning down"
    else:
        lean = "No clear lean"
    first = (f"{lean} (P(up) - P(down) = {_signed(score, 2)}, "
             f"expected return {_signed(100.0 * expected_return, 2)}%).")
    drivers = [a for a in attributions[:top] if abs(a.direction) >= TINY]
    if drivers:
        return f"{first} Biggest drivers: {', '.join(_driver(a) for a in drivers)}."
    largest = attributions[0] if attributions else None
    if largest is None or largest.direction == 0.0:
        return f"{first} No single feature moves it much."
    return (f"{first} No single feature moves it much (largest: {label(largest.feature)} "
            f"{format_value(largest.feature, largest.value)}, {_signed(largest.direction, 3)}).")


def _driver(attribution: Attribution) -> str:
    way = "up" if attribution.direction > 0 else "down"
    return (f"{label(attribution.feature)} {format_value(attribution.feature, attribution.value)} "
            f"(pushes {way} {_signed(attribution.direction, 2)})")


def _signed(x: float, digits: int) -> str:
    # "-0.00" would claim a sign the rounded number does not have.
    if round(x, digits) == 0:
        x = 0.0
    return f"{x:+.{digits}f}"


def _check(bundles: list[ModelBundle], raw: np.ndarray, top: int) -> list[str]:
    if not bundles:
        raise ValueError("explain needs at least one model bundle")
    first = bundles[0]
    features, length = list(first.features), first.sequence_length
    for bundle in bundles:
        if list(bundle.features) != features:
            raise ValueError(f"bundles disagree on features: {bundle.directory} has {list(bundle.features)}, "
                             f"{first.directory} has {features}")
        if bundle.sequence_length != length:
            raise ValueError(f"bundles disagree on sequence length: {bundle.directory} has "
                             f"{bundle.sequence_length}, {first.directory} has {length}")
        if list(bundle.scaler.features) != features:
            raise ValueError(f"{bundle.directory}: scaler features {list(bundle.scaler.features)} "
                             f"do not match the bundle's {features}")
    shape = np.shape(raw)
    if shape != (length, len(features)):
        raise ValueError(f"expected one symbol's raw sequence of shape ({length}, {len(features)}) "
                         f"(sequence length, features), got {shape}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    return features
