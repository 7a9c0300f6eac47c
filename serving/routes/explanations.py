"""What drives a symbol's latest prediction: per-feature occlusion attributions and a text."""

from __future__ import annotations

import math

from serving.deps import ExpensiveReadKey, LiveDep, ScorerDep, StoreDep, SymbolPath
from serving.errors import located
from serving.routes import NOT_FOUND, v1_router
from serving.schemas import AttributionOut, ExplanationResponse

router = v1_router("predictions")


@router.get("/explanations/{symbol}", response_model=ExplanationResponse, responses=NOT_FOUND,
            summary="What drives a symbol's latest prediction (per-feature attributions)")
def explanation(symbol: SymbolPath, store: StoreDep, live: LiveDep, scorer: ScorerDep,
                _key: ExpensiveReadKey) -> ExplanationResponse:
    entry = live.latest.get(symbol)
    if entry is None:
        raise store.missing_prediction(symbol)
    # The models are those the stored prediction names; a pair of them that cannot score
    # together is reported as a bad model_version in the body, as POST /score reports it.
    with located("body"):
        explained = scorer.explain(symbol, entry.model_name, entry.model_version)
    result = explained.explanation
    return ExplanationResponse(
        symbol=symbol, model_name=explained.model_name, model_version=explained.model_version,
        data_timestamp=explained.data_timestamp, method=result.method, score=result.score,
        expected_return=result.expected_return, text=result.text,
        attributions=[
            # JSON has no NaN: a missing newest value is null.
            AttributionOut(feature=a.feature, value=a.value if math.isfinite(a.value) else None,
                           baseline=a.baseline, direction=a.direction, expected_return=a.expected_return)
            for a in result.attributions
        ],
    )
