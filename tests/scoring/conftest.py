"""Untrained bundles (real ONNX, random weights) built once per session for the tests that
register, load and watch models; read-only: tests copy them before changing a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickcast.models.untrained import quick_bundles


@pytest.fixture(scope="session")
def untrained_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An LSTM and a Transformer bundle of features return_1d and rsi_14, sequences of 3."""
    return quick_bundles(tmp_path_factory.mktemp("untrained-pair"), features=["return_1d", "rsi_14"],
                         sequence_length=3)
