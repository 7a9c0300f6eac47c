"""The promotion decisions of an interval's models, as the registry keeps them.

``tickcast promote`` (and the `retrain` DAG) puts every challenger to the promotion gate and
leaves the verdict on the version (``registry.DECISION_TAG``: "promoted: ...", "refused: ...");
a rollback leaves "rolled back: ..." on the version it demoted, and the registered model keeps
the versions that were champion, in order (``registry.HISTORY_TAG``). ``listing`` shows the
verdicts of the two aliased versions; this reads every version's, newest first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickcast.core.errors import Unavailable
from tickcast.models.networks import ARCHITECTURES
from tickcast.models.registry import CHAMPION, DECISION_TAG, HISTORY_TAG, registered_name

log = logging.getLogger(__name__)

VERDICTS = ("promoted", "refused", "rolled back")
# Versions listed per architecture, newest first.
LIMIT = 20


@dataclass(frozen=True)
class DecisionRecord:
    name: str
    architecture: str
    version: str
    created_at: datetime | None
    run_id: str | None
    aliases: tuple[str, ...]  # champion and/or challenger now
    was_champion: bool  # champion once, not now
    verdict: str | None  # one of VERDICTS; None before the version met the gate
    reasons: tuple[str, ...]


def parse_decision(text: str | None) -> tuple[str | None, tuple[str, ...]]:
    """("promoted" | "refused" | "rolled back" | None, the reasons) of a decision tag
    (``Decision.summary()``: the verdict, a colon, the reasons joined by "; ")."""
    if not text:
        return None, ()
    head, _, rest = text.partition(":")
    verdict = head.strip() if head.strip() in VERDICTS else None
    body = rest if verdict else text
    return verdict, tuple(r.strip() for r in body.split(";") if r.strip())


def records(name: str, architecture: str, versions: Iterable[Any], history: list[str],
            aliases: Mapping[str, str]) -> list[DecisionRecord]:
    """One record per MLflow ModelVersion of ``name``, newest first; ``history``: the versions
    that were champion, in order; ``aliases``: alias -> version now."""
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for v in versions:
        version = str(v.version)
        mine = tuple(by_version.get(version, ()))
        verdict, reasons = parse_decision((v.tags or {}).get(DECISION_TAG))
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC) if v.creation_timestamp else None
        out.append(DecisionRecord(name=name, architecture=architecture, version=version, created_at=created,
                                  run_id=v.run_id, aliases=mine,
                                  was_champion=version in history and CHAMPION not in mine,
                                  verdict=verdict, reasons=reasons))
    out.sort(key=lambda r: int(r.version) if r.version.isdigit() else -1, reverse=True)
    return out


def promotion_history(client: Any, interval: str, limit: int = LIMIT) -> list[DecisionRecord]:
    """Every architecture's newest ``limit`` versions with their decisions (none for an
    architecture never registered); Unavailable when the registry cannot be read."""
    from mlflow.exceptions import MlflowException

    out: list[DecisionRecord] = []
    try:
        for arch in ARCHITECTURES:
            name = registered_name(arch, interval)
            try:
                model = client.get_registered_model(name)
            except MlflowException as exc:
                if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                    continue
                raise
            history = [str(v) for v in json.loads((model.tags or {}).get(HISTORY_TAG, "[]"))]
            versions = client.search_model_versions(f"name='{name}'")
            out += records(name, arch, versions, history, dict(model.aliases or {}))[:limit]
    except Exception as exc:  # noqa: BLE001 - the registry being down is an answer, not a crash
        log.warning("model registry unreachable: %s", exc)
        raise Unavailable(f"the model registry cannot be read: {exc}") from None
    return out
