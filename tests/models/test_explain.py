"""Occlusion attributions of the LSTM + Transformer ensemble, checked against the bundles' own predictions."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from small_bundles import FEATURES, LENGTH, MEAN, SCALE

from tickcast.models.bundle import ModelBundle
from tickcast.models.explain import Attribution, explain, format_value, label, summarise
from tickcast.models.labels import DOWN, UP

TOL = 1e-6  # batch-of-one vs batched runs may differ in the last float32 bits


@pytest.fixture(scope="module")
def bundles(trained_bundles) -> list[ModelBundle]:
    """The session's small LSTM and Transformer bundles (a child for AAA), with a real scaler:
    "the mean" of a feature differs from 0 in raw units."""
    return [ModelBundle(trained_bundles[arch][3], providers=["CPUExecutionProvider"])
            for arch in ("lstm", "transformer")]


def _raw(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return MEAN + SCALE * rng.normal(0, 2.0, size=(LENGTH, len(FEATURES)))


def _ensemble(bundles, symbol: str, raw: np.ndarray, route: str | None = None) -> tuple[float, float]:
    probabilities, medians = [], []
    for bundle in bundles:
        p, q = bundle.predict([symbol], raw[None], None if route is None else [route])
        probabilities.append(p[0].astype(float))
        medians.append(float(q[0, 1]))
    p = np.mean(probabilities, axis=0)
    return float(p[UP] - p[DOWN]), float(np.mean(medians))


@pytest.mark.slow  # the bundles: the session's small trained networks, exported to ONNX
@pytest.mark.parametrize("symbol", ["AAA", "ZZZ"])  # a child, and the parent's fallback
def test_score_and_attributions_match_direct_predictions(bundles, symbol):
    raw = _raw()
    result = explain(bundles, symbol, raw)

    score, expected = _ensemble(bundles, symbol, raw)
    assert result.symbol == symbol and result.method == "occlusion"
    assert result.score == pytest.approx(score, abs=TOL)
    assert result.expected_return == pytest.approx(expected, abs=TOL)
    assert result.score != 0.0  # the networks react to a 2-sigma input

    by_name = {a.feature: a for a in result.attributions}
    assert sorted(by_name) == sorted(FEATURES)
    for j, name in enumerate(FEATURES):
        occluded = raw.copy()
        occluded[:, j] = MEAN[j]
        occluded_score, occluded_expected = _ensemble(bundles, symbol, occluded)
        attribution = by_name[name]
        assert attribution.direction == pytest.approx(score - occluded_score, abs=TOL)
        assert attribution.expected_return == pytest.approx(expected - occluded_expected, abs=TOL)
        assert attribution.value == raw[-1, j]
        assert attribution.baseline == pytest.approx(MEAN[j])
    assert any(abs(a.direction) > 1e-3 for a in result.attributions)


@pytest.mark.slow  # bundles
def test_children_and_parent_explain_differently(bundles):
    raw = _raw()
    assert explain(bundles, "AAA", raw).score != pytest.approx(explain(bundles, "ZZZ", raw).score, abs=TOL)


@pytest.mark.slow  # bundles
def test_an_earnings_day_is_explained_by_the_earnings_network(bundles):
    raw = _raw()
    routed = explain(bundles, "AAA", raw, route="earnings")
    score, expected = _ensemble(bundles, "AAA", raw, route="earnings")
    assert routed.score == pytest.approx(score, abs=TOL)
    assert routed.expected_return == pytest.approx(expected, abs=TOL)
    assert routed.score != pytest.approx(explain(bundles, "AAA", raw).score, abs=TOL)


@pytest.mark.slow  # bundles
def test_a_column_already_at_the_mean_contributes_exactly_zero(bundles):
    raw = _raw(1)
    j = FEATURES.index("macd")
    raw[:, j] = MEAN[j]
    by_name = {a.feature: a for a in explain(bundles, "AAA", raw).attributions}
    assert by_name["macd"].direction == 0.0
    assert by_name["macd"].expected_return == 0.0


@pytest.mark.slow  # bundles
def test_one_batched_predict_per_bundle(bundles, monkeypatch):
    calls = []
    for bundle in bundles:
        original = bundle.predict

        def counting(symbols, raw, routes=None, original=original, name=bundle.architecture):
            calls.append((name, len(symbols), raw.shape))
            return original(symbols, raw, routes)

        monkeypatch.setattr(bundle, "predict", counting)
    explain(bundles, "AAA", _raw())
    n = len(FEATURES)
    assert calls == [("lstm", n + 1, (n + 1, LENGTH, n)), ("transformer", n + 1, (n + 1, LENGTH, n))]


@pytest.mark.slow  # bundles
def test_sorted_by_absolute_direction_and_text_names_the_top_feature(bundles):
    result = explain(bundles, "AAA", _raw(2), top=2)
    sizes = [abs(a.direction) for a in result.attributions]
    assert sizes == sorted(sizes, reverse=True)

    text = result.text
    assert f"P(up) - P(down) = {result.score:+.2f}" in text
    assert f"expected return {100 * result.expected_return:+.2f}%" in text
    assert label(result.attributions[0].feature) in text
    assert "nan" not in text.lower()
    assert 1 <= text.count(". ") + 1 <= 3
    # top=2: the third-largest driver is not named
    assert label(result.attributions[2].feature) not in text
    assert explain(bundles, "AAA", _raw(2), top=2).text == text


@pytest.mark.slow  # bundles
def test_a_missing_newest_value_reads_as_missing(bundles):
    # Every column at the mean except RSI, which is far off and then missing in the newest bar:
    # RSI is then the only feature that can move the prediction.
    raw = np.tile(MEAN, (LENGTH, 1))
    j = FEATURES.index("rsi_14")
    raw[:, j] = [95.0, 90.0, 92.0, np.nan]
    result = explain(bundles, "AAA", raw)

    top = result.attributions[0]
    assert top.feature == "rsi_14"
    assert math.isnan(top.value)
    assert top.direction != 0.0
    assert all(a.direction == 0.0 for a in result.attributions[1:])
    assert "RSI(14) missing" in result.text
    assert "nan" not in result.text.lower()


@pytest.mark.slow  # bundles
def test_mismatched_bundles_and_wrong_shapes_are_refused(bundles):
    lstm, transformer = bundles
    raw = _raw()

    other_features = copy.copy(transformer)
    other_features.features = list(reversed(FEATURES))
    with pytest.raises(ValueError, match="disagree on features"):
        explain([lstm, other_features], "AAA", raw)

    longer = copy.copy(transformer)
    longer.sequence_length = LENGTH + 1
    with pytest.raises(ValueError, match="disagree on sequence length"):
        explain([lstm, longer], "AAA", raw)

    with pytest.raises(ValueError, match=r"shape \(4, 5\).*got \(1, 4, 5\)"):
        explain(bundles, "AAA", raw[None])
    with pytest.raises(ValueError, match=r"shape \(4, 5\).*got \(3, 5\)"):
        explain(bundles, "AAA", raw[1:])
    with pytest.raises(ValueError, match="at least one model bundle"):
        explain([], "AAA", raw)
    with pytest.raises(ValueError, match="top must be at least 1"):
        explain(bundles, "AAA", raw, top=0)


def test_labels_and_values_read_like_prose():
    assert label("volatility_20d") == "20-day volatility"
    assert label("return_5d") == "5-day return"
    assert label("volume_ratio_20d") == "20-day volume ratio"
    assert label("rsi_14") == "RSI(14)"
    assert label("something_new") == "something_new"
    assert format_value("rsi_14", 71.234) == "at 71.2"
    assert format_value("volatility_20d", 0.3112) == "at 0.311"
    assert format_value("return_1d", -0.0123) == "at -1.23%"
    assert format_value("dollar_volume", 2.5e9) == "at 2.5B"
    assert format_value("rsi_14", float("nan")) == "missing"


def test_summary_wording():
    def a(feature, direction, value=1.0):
        return Attribution(feature, value, 0.0, direction, 0.0)

    text = summarise(-0.21, -0.0035, [a("rsi_14", -0.12, 71.2), a("volatility_20d", 0.05, float("nan")),
                                      a("macd", 0.004)])
    assert text == ("Leaning down (P(up) - P(down) = -0.21, expected return -0.35%). Biggest drivers: "
                    "RSI(14) at 71.2 (pushes down -0.12), 20-day volatility missing (pushes up +0.05).")

    quiet = summarise(0.001, 0.0, [a("macd", -0.004, 0.5), a("rsi_14", 0.001)])
    assert quiet == ("No clear lean (P(up) - P(down) = +0.00, expected return +0.00%). "
                     "No single feature moves it much (largest: MACD at 0.5, -0.004).")
    assert summarise(0.3, 0.01, [a("macd", 0.0)]).endswith("No single feature moves it much.")
