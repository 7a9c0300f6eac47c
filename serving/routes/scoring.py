"""On-demand scoring: stored features of named symbols, or sequences the caller supplies."""

from __future__ import annotations

from serving.deps import ExpensiveScoreKey, ScorerDep
from serving.errors import located
from serving.routes import NOT_FOUND, v1_router
from serving.schemas import ScoreRequest, ScoreResponse

router = v1_router("scoring")


@router.post("/score", response_model=ScoreResponse, responses=NOT_FOUND,
             summary="Score symbols (stored features) or supplied feature sequences now")
def score(request: ScoreRequest, scorer: ScorerDep, _key: ExpensiveScoreKey) -> ScoreResponse:
    with located("body"):
        if request.symbols is not None:
            scored = scorer.score_symbols(request.symbols, request.interval, request.model_version)
        else:
            scored = scorer.score_sequences(request.sequences or [], request.interval, request.model_version)
    return ScoreResponse(model_name=scored.model_name, model_version=scored.model_version,
                         predictions=scored.predictions, not_scored=scored.not_scored)
