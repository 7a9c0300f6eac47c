"""The promotion gate's decisions, without MLflow."""

from __future__ import annotations

import pytest

from tickcast.models.registry import promotion_gate, registered_name

BASELINES = {"no_change": {"ic": None}, "momentum": {"ic": 0.01}, "logistic": {"ic": 0.02},
             "lightgbm": {"ic": 0.03}}


def test_first_champion_needs_only_to_beat_the_baselines():
    decision = promotion_gate({"ic": 0.05}, None, BASELINES, metric="ic", margin=0.01)
    assert decision.promote and decision.champion is None
    assert "no champion yet" in decision.summary()


def test_refuses_a_challenger_worse_than_the_champion():
    decision = promotion_gate({"ic": 0.05}, {"ic": 0.06}, BASELINES, metric="ic", margin=0.0)
    assert not decision.promote and "does not beat the champion" in decision.summary()


def test_refuses_a_challenger_within_the_margin():
    decision = promotion_gate({"ic": 0.065}, {"ic": 0.06}, BASELINES, metric="ic", margin=0.01)
    assert not decision.promote
    assert promotion_gate({"ic": 0.071}, {"ic": 0.06}, BASELINES, metric="ic", margin=0.01).promote


def test_refuses_a_challenger_that_loses_to_a_baseline():
    decision = promotion_gate({"ic": 0.5}, {"ic": 0.1}, {**BASELINES, "lightgbm": {"ic": 0.6}},
                              metric="ic", margin=0.01)
    assert not decision.promote and "does not beat baseline lightgbm" in decision.summary()


def test_a_model_without_ic_has_no_skill():
    # A constant forecast has no IC: it counts as zero, and cannot beat a baseline at zero.
    assert not promotion_gate({"ic": None}, None, {"no_change": {"ic": None}}, metric="ic", margin=0).promote
    # For other metrics a missing value can beat nothing.
    assert not promotion_gate({"sharpe": None}, None, {"momentum": {"sharpe": -5.0}}, metric="sharpe",
                              margin=0).promote


def test_no_baselines_means_no_promotion():
    assert not promotion_gate({"ic": 0.5}, None, {}, metric="ic", margin=0).promote


@pytest.mark.parametrize("arch,interval,name", [("lstm", "1d", "tickcast-lstm-1d"),
                                                ("transformer", "1m", "tickcast-transformer-1m")])
def test_registered_names(arch, interval, name):
    assert registered_name(arch, interval) == name
