"""The registered models behind the predictions: champion and challenger, with their metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from serving.deps import ExpensiveReadKey, LiveDep, LoaderDep, SettingsDep
from serving.routes import v1_router
from serving.schemas import (
    ErrorResponse,
    ModelsResponse,
    MonitoringCheckOut,
    MonitoringResponse,
    RegisteredModelOut,
)
from tickcast.core.intervals import IntervalName
from tickcast.models.listing import registered_models

router = v1_router("models")


@router.get("/models", response_model=ModelsResponse, summary="Champion and challenger models",
            responses={503: {"model": ErrorResponse, "description": "The model registry cannot be read"}})
def models(
    settings: SettingsDep, loader: LoaderDep, live: LiveDep, _key: ExpensiveReadKey,
    interval: Annotated[IntervalName | None, Query(description="Default: the scorer's")] = None,
) -> ModelsResponse:
    interval = interval or settings.scorer_interval
    listed = [RegisteredModelOut.model_validate(m, from_attributes=True)
              for m in registered_models(loader, interval)]
    serving = " ".join(live.last_model) if live.last_model else None
    return ModelsResponse(interval=interval, serving=serving, models=listed)


@router.get("/models/monitoring", response_model=MonitoringResponse, summary="How the champion is doing",
            description="The newest run of the monitor DAG: drift of each input against the champion's training "
                        "data, its confidence, its realised IC and hit rate against its predecessor's and the "
                        "momentum baseline's, and the rollback rule's state.")
def monitoring(
    settings: SettingsDep, _key: ExpensiveReadKey,
    interval: Annotated[IntervalName | None, Query(description="Default: the scorer's")] = None,
) -> MonitoringResponse:
    from tickcast.models.watch import latest_checks

    interval = interval or settings.scorer_interval
    return MonitoringResponse(interval=interval,
                              checks=[MonitoringCheckOut.model_validate(row) for row in latest_checks(settings, interval)])
