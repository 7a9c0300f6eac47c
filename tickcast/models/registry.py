"""The MLflow model registry: versions, the ``champion``/``challenger`` aliases, promotion.

Each architecture and interval is one registered model, ``tickcast-<arch>-<interval>``
(``tickcast-lstm-1d``...). ``tickcast train`` registers a version per architecture (its
source is the run's bundle directory) and points ``challenger`` at it.

Promotion compares metrics measured on the same walk-forward folds: the challenger's run
holds ``metrics.json`` for its own deployed variant and for every baseline. The champion's
figure must come from the same folds too; when its run used other folds it is evaluated
again on the challenger's (the caller supplies that re-evaluation). The history of
champions lives in a registered-model tag, so ``rollback`` can restore the previous one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
DECISION_TAG = "promotion_decision"
# A version's bundle content hash (``bundle.bundle_digest`` of what was logged), recorded at
# registration and checked by every loader before it opens the bundle.
DIGEST_TAG = "bundle_sha256"
# A metric a predictor cannot have (IC of a constant forecast) counts as no skill at all.
NO_SKILL = {"ic": 0.0, "rank_ic": 0.0}


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (no such model, alias or version)."""


def registered_name(arch: str, interval: str) -> str:
    return f"tickcast-{arch}-{interval}"


def pair_label(lstm: object, transformer: object) -> str:
    """How a prediction names the pair that made it: the LSTM's and the Transformer's names (or
    versions) joined by ``+`` (``tickcast-lstm-1d+tickcast-transformer-1d``, ``3+2``)."""
    return f"{lstm}+{transformer}"


def _value(metrics: Mapping[str, object] | None, metric: str) -> float:
    value = None if metrics is None else metrics.get(metric)
    if not isinstance(value, int | float | str) or (isinstance(value, float) and not math.isfinite(value)):
        return NO_SKILL.get(metric, -math.inf)
    return float(value)


@dataclass
class Decision:
    promote: bool
    metric: str
    challenger: float
    champion: float | None
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "promoted" if self.promote else "refused"
        return f"{verdict}: " + "; ".join(self.reasons)


def promotion_gate(challenger: Mapping[str, object], champion: Mapping[str, object] | None,
                   baselines: Mapping[str, Mapping[str, object]], *, metric: str, margin: float) -> Decision:
    """Promote only when the challenger beats the champion by ``margin`` and every baseline.

    All three must be measured on the same folds; ``champion`` is None when there is none yet.
    """
    mine = _value(challenger, metric)
    reasons: list[str] = []
    ok = True
    if champion is not None:
        theirs = _value(champion, metric)
        if mine >= theirs + margin:
            reasons.append(f"{metric} {mine:.4f} beats the champion's {theirs:.4f} by at least {margin:g}")
        else:
            ok = False
            reasons.append(f"{metric} {mine:.4f} does not beat the champion's {theirs:.4f} by {margin:g}")
    else:
        theirs = None
        reasons.append("there is no champion yet")
    if not baselines:
        ok = False
        reasons.append("no baseline was measured on these folds")
    for name, figures in sorted(baselines.items()):
        floor = _value(figures, metric)
        if not mine > floor:
            ok = False
            reasons.append(f"{metric} {mine:.4f} does not beat baseline {name} ({floor:.4f})")
    if ok:
        reasons.append(f"beats every baseline ({', '.join(sorted(baselines))})")
    return Decision(ok, metric, mine, theirs, reasons)


# --- MLflow side -----------------------------------------------------------------------------

def client():
    from mlflow import MlflowClient

    return MlflowClient()


def _exists(mlflow_client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def register(mlflow_client, *, name: str, source: str, run_id: str, tags: dict[str, str],
             description: str = "", digest: str | None = None):
    """A new version of ``name`` from ``source`` (an artifact directory), aliased challenger;
    ``digest``: the bundle's content hash, recorded on the version (``DIGEST_TAG``)."""
    if digest is not None:
        tags = {**tags, DIGEST_TAG: digest}
    if not _exists(mlflow_client, name):
        mlflow_client.create_registered_model(
            name, description="TickCast model; aliases: champion (serving), challenger (latest trained)")
    version = mlflow_client.create_model_version(name, source, run_id=run_id, tags=tags,
                                                 description=description)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def version_for(mlflow_client, name: str, ref: str | int | None):
    """A version by number, by alias, or the challenger when ``ref`` is None."""
    from mlflow.exceptions import MlflowException

    if not _exists(mlflow_client, name):
        raise RegistryError(f"no registered model {name}: train one first (tickcast train)")
    try:
        if ref is None:
            return mlflow_client.get_model_version_by_alias(name, CHALLENGER)
        if str(ref).isdigit():
            return mlflow_client.get_model_version(name, str(ref))
        return mlflow_client.get_model_version_by_alias(name, str(ref))
    except MlflowException:
        what = f"version {ref}" if ref is not None and str(ref).isdigit() else f"alias {ref or CHALLENGER}"
        raise RegistryError(f"{name} has no {what}") from None


def champion(mlflow_client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def history(mlflow_client, name: str) -> list[str]:
    tags = mlflow_client.get_registered_model(name).tags or {}
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def make_champion(mlflow_client, name: str, version: str, decision: Decision | None) -> None:
    past = history(mlflow_client, name)
    past.append(str(version))
    mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))
    if decision is not None:
        mlflow_client.set_model_version_tag(name, str(version), DECISION_TAG, decision.summary())


def record_refusal(mlflow_client, name: str, version: str, decision: Decision) -> None:
    mlflow_client.set_model_version_tag(name, str(version), DECISION_TAG, decision.summary())


def rollback(mlflow_client, name: str) -> tuple[str, str]:
    """Point ``champion`` back at the previous champion; returns (from, to) versions."""
    if not _exists(mlflow_client, name):
        raise RegistryError(f"no registered model {name}")
    past = history(mlflow_client, name)
    current = champion(mlflow_client, name)
    if current is None or len(past) < 2:
        raise RegistryError(f"{name} has no previous champion to roll back to")
    past.pop()
    previous = past[-1]
    mlflow_client.set_registered_model_alias(name, CHAMPION, previous)
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past))
    mlflow_client.set_model_version_tag(name, current.version, DECISION_TAG,
                                        f"rolled back: champion returned to version {previous}")
    return current.version, previous
