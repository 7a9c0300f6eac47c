"""mlflow's set_tracking_uri/set_registry_uri also export MLFLOW_TRACKING_URI and
MLFLOW_REGISTRY_URI, which later subprocesses of the test session would inherit."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_EXPORTED = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture
def restore_mlflow_uris() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in _EXPORTED}
    yield
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
