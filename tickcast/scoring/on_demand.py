"""Scoring on request, outside the stream: symbols from their stored features, feature
sequences a caller supplies, and what drives a symbol's latest prediction.

The models are the registry's (champion, challenger or numbered versions), opened once per
process by the ``ModelLoader`` given. Failures are ``tickcast.core.errors``: a model or
symbol that cannot be found, input the models cannot take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from tickcast.core.errors import InvalidInput, ModelNotFound, NotFound, Unavailable

if TYPE_CHECKING:
    from tickcast.core.predictions import Prediction
    from tickcast.core.settings import Settings
    from tickcast.models.explain import Explanation
    from tickcast.scoring.models import DualModel, ModelLoader

CHAMPION_PAIR = "champion"


class SuppliedSequence(Protocol):
    """A caller's own input for one symbol (the API's request body has this shape)."""

    symbol: str
    features: list[dict[str, float | None]]  # oldest first; None = missing
    close: float
    data_timestamp: datetime | None  # None = now


@dataclass(frozen=True)
class Scored:
    model_name: str
    model_version: str
    predictions: list[Prediction]
    not_scored: dict[str, str]  # symbol -> why


@dataclass(frozen=True)
class Explained:
    symbol: str
    model_name: str
    model_version: str
    data_timestamp: datetime
    explanation: Explanation


def trained_interval(model_name: str) -> str | None:
    """``tickcast-lstm-1d+tickcast-transformer-1d`` -> ``1d``; None for other models (the baseline)."""
    first = model_name.split("+")[0]
    return first.rsplit("-", 1)[-1] if first.startswith("tickcast-lstm-") else None


class OnDemandScorer:
    def __init__(self, settings: Settings, loader: ModelLoader):
        self.settings = settings
        self.loader = loader

    def dual(self, interval: str, model_version: str = CHAMPION_PAIR) -> DualModel:
        """The pair named by ``model_version``: an alias for both, or ``<lstm>+<transformer>``."""
        from mlflow.exceptions import MlflowException

        from tickcast.models.bundle import BundleIntegrityError
        from tickcast.models.registry import RegistryError

        refs = model_version.split("+") if "+" in model_version else [model_version, model_version]
        try:
            dual = self.loader.dual(interval, *refs)
        except RegistryError as exc:
            raise InvalidInput(("model_version",), str(exc)) from None
        except BundleIntegrityError as exc:
            # Not the caller's fault, and nothing to serve until a trusted version is registered.
            raise Unavailable(str(exc)) from None
        except MlflowException as exc:  # the registry down or not answering (within its bounds)
            raise Unavailable(f"the model registry cannot be asked for the models: {exc}") from None
        if dual is None:
            what = "no champion" if model_version == CHAMPION_PAIR else f"no model version '{model_version}'"
            raise ModelNotFound(f"{what} for interval {interval}: train and promote models first "
                                "(tickcast train, tickcast promote)")
        return dual

    def score_symbols(self, symbols: Sequence[str], interval: str | None = None,
                      model_version: str = CHAMPION_PAIR) -> Scored:
        """Each symbol's latest stored feature sequence, scored now; NotFound when none can be."""
        from tickcast.scoring.sources import latest_sequences

        interval = interval or self.settings.scorer_interval
        dual = self.dual(interval, model_version)
        wanted = list(dict.fromkeys(symbols))
        batch, not_scored = latest_sequences(self.settings, wanted, interval, dual.features, dual.sequence_length)
        if len(batch) == 0:
            raise NotFound("none of the symbols could be scored: " + "; ".join(
                f"{s}: {r}" for s, r in list(not_scored.items())[:5]))
        return self._scored(dual, batch, not_scored)

    def score_sequences(self, sequences: Sequence[SuppliedSequence], interval: str | None = None,
                        model_version: str = CHAMPION_PAIR) -> Scored:
        """Supplied sequences, scored now: each exactly the models' length, each vector with
        exactly the models' features (InvalidInput otherwise)."""
        import numpy as np
        import pandas as pd

        from tickcast.scoring.score import SequenceBatch

        interval = interval or self.settings.scorer_interval
        dual = self.dual(interval, model_version)
        raws = []
        for i, supplied in enumerate(sequences):
            if len(supplied.features) != dual.sequence_length:
                raise InvalidInput(("sequences", i, "features"), f"the models take {dual.sequence_length} "
                                   f"feature vectors, got {len(supplied.features)}")
            for j, vector in enumerate(supplied.features):
                missing = [f for f in dual.features if f not in vector]
                unknown = [f for f in vector if f not in dual.features]
                if missing or unknown:
                    raise InvalidInput(("sequences", i, "features", j), f"missing {missing[:5]}, unknown "
                                       f"{unknown[:5]}; the models take {dual.features}")
            raws.append([[np.nan if v[f] is None else v[f] for f in dual.features] for v in supplied.features])
        now = pd.Timestamp.now(tz=UTC)

        def stamp(value: datetime | None) -> pd.Timestamp:
            at = pd.Timestamp(value) if value is not None else now
            return at.tz_localize(UTC) if at.tzinfo is None else at.tz_convert(UTC)

        batch = SequenceBatch(
            symbols=np.array([s.symbol for s in sequences], dtype=object),
            raw=np.asarray(raws, dtype=float),
            close=np.array([s.close for s in sequences], dtype=float),
            data_timestamp=pd.DatetimeIndex([stamp(s.data_timestamp) for s in sequences]),
        )
        return self._scored(dual, batch, {})

    @staticmethod
    def _scored(dual: DualModel, batch, not_scored: dict[str, str]) -> Scored:
        from tickcast.core.predictions import frame_to_predictions
        from tickcast.scoring.score import score

        return Scored(model_name=dual.model_name, model_version=dual.model_version,
                      predictions=frame_to_predictions(score(dual, batch)), not_scored=not_scored)

    def explain(self, symbol: str, model_name: str, model_version: str) -> Explained:
        """Per-feature attributions of the models that made ``symbol``'s latest prediction
        (``model_name``, ``model_version``), over its latest stored feature sequence."""
        from tickcast.models.explain import explain
        from tickcast.scoring.sources import latest_sequences

        interval = trained_interval(model_name)
        if interval is None:
            raise NotFound(f"the latest prediction for '{symbol}' comes from {model_name}, not the trained "
                           "models; explanations need a champion (tickcast train, tickcast promote)")
        dual = self.dual(interval, model_version)
        batch, skipped = latest_sequences(self.settings, [symbol], interval, dual.features, dual.sequence_length)
        if len(batch) == 0:
            raise NotFound(f"cannot explain '{symbol}': {skipped.get(symbol, 'no features')}")
        routes = dual.routes(batch.symbols, batch.data_timestamp)
        return Explained(symbol=symbol, model_name=dual.model_name, model_version=dual.model_version,
                         data_timestamp=batch.data_timestamp[0].to_pydatetime(),
                         explanation=explain(list(dual.bundles), symbol, batch.raw[0],
                                             route=None if routes is None else str(routes[0])))
