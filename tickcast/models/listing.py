"""The registered models of an interval as someone choosing between them sees them: champion
and challenger of each architecture, with the walk-forward metrics and the promotion
decision that ``tickcast train`` / ``tickcast promote`` left in their registry tags.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tickcast.core.errors import Unavailable
from tickcast.models.networks import ARCHITECTURES
from tickcast.models.registry import CHALLENGER, CHAMPION, DECISION_TAG, registered_name

log = logging.getLogger(__name__)

METRIC_TAG_PREFIX = "metric."


class AliasSource(Protocol):
    """What answers "which version is champion and challenger" (``tickcast.scoring.models.ModelLoader``)."""

    def aliases(self, interval: str) -> Mapping[str, Mapping[str, Any]]: ...


@dataclass(frozen=True)
class VersionInfo:
    version: str
    alias: str  # champion or challenger
    created_at: datetime | None
    run_id: str | None
    metrics: dict[str, float]
    promotion_decision: str | None


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    architecture: str
    interval: str
    champion: VersionInfo | None
    challenger: VersionInfo | None


def tag_metrics(tags: Mapping[str, str] | None) -> dict[str, float]:
    """``metric.<name>`` tags as numbers; a tag that is not a number, or is NaN, is left out."""
    metrics = {}
    for key, value in (tags or {}).items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                number = float(value)
            except ValueError:
                continue
            if number == number:
                metrics[key.removeprefix(METRIC_TAG_PREFIX)] = number
    return metrics


def _described(alias: str, version: Any) -> VersionInfo | None:
    """An MLflow ModelVersion as shown; None when the alias points nowhere."""
    if version is None:
        return None
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC) if version.creation_timestamp else None
    return VersionInfo(version=str(version.version), alias=alias, created_at=created, run_id=version.run_id,
                       metrics=tag_metrics(version.tags), promotion_decision=(version.tags or {}).get(DECISION_TAG))


def registered_models(source: AliasSource, interval: str) -> list[RegisteredModel]:
    """One entry per architecture, in ARCHITECTURES order; Unavailable when the registry cannot be read."""
    # Here, not at the top: networks imports numpy, and the API imports this module at start-up.

    try:
        found = source.aliases(interval)
    except Exception as exc:  # noqa: BLE001 - the registry being down is an answer, not a crash
        log.warning("model registry unreachable: %s", exc)
        raise Unavailable(f"the model registry cannot be read: {exc}") from None
    models = []
    for arch in ARCHITECTURES:
        name = registered_name(arch, interval)
        aliases = found.get(name, {})
        models.append(RegisteredModel(name=name, architecture=arch, interval=interval,
                                      champion=_described(CHAMPION, aliases.get(CHAMPION)),
                                      challenger=_described(CHALLENGER, aliases.get(CHALLENGER))))
    return models
