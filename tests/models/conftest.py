"""Session-wide model fixtures: networks are trained and exported to ONNX once, then shared."""

from __future__ import annotations

import pytest
import small_bundles


@pytest.fixture(scope="session")
def trained_bundles(tmp_path_factory):
    """arch -> (parent, child, scaler, directory); read-only (tests load them, never write)."""
    return small_bundles.build(tmp_path_factory.mktemp("small-bundles"))
