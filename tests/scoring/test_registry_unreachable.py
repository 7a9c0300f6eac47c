"""A model registry that cannot be asked (the server closes every connection) is no answer,
never "no champion": the loader raises, and on-demand scoring answers Unavailable (a 503), not
ModelNotFound (a 404)."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from tests.faults.standins import HangingServer
from tickcast.core.errors import Unavailable
from tickcast.core.settings import Settings
from tickcast.scoring.models import ModelLoader
from tickcast.scoring.on_demand import OnDemandScorer


def test_an_unreachable_registry_is_no_answer_not_no_champion(settings: Settings, monkeypatch) -> None:
    server = HangingServer(hanging=False)  # no upstream: each connection is closed unanswered
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.setenv(name, "")  # set by the loader from the settings: restored after the test
    remote = settings.model_copy(update={"mlflow_tracking_uri": server.url, "mlflow_http_timeout_seconds": 1,
                                         "mlflow_http_max_retries": 0})
    try:
        loader = ModelLoader(remote)
        with pytest.raises(MlflowException):
            loader.version_of("tickcast-lstm-1d", "champion")
        with pytest.raises(Unavailable, match="the model registry cannot be asked"):
            OnDemandScorer(remote, loader).dual("1d")
    finally:
        server.close()
