"""Every version's promotion decision, from registry records (without MLflow here; the page's
tests read a real registry)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from tickcast.core.errors import Unavailable
from tickcast.models.promotions import parse_decision, promotion_history, records
from tickcast.models.registry import DECISION_TAG, promotion_gate

BASELINES = {"momentum": {"ic": 0.01}}


def _version(number: int, decision: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(version=number, creation_timestamp=1_700_000_000_000 + number * 60_000, run_id=f"run{number}",
                           tags={DECISION_TAG: decision} if decision else {"architecture": "lstm"})


def test_a_decision_tag_reads_as_its_verdict_and_reasons() -> None:
    promoted = promotion_gate({"ic": 0.05}, None, BASELINES, metric="ic", margin=0.005)
    assert parse_decision(promoted.summary()) == ("promoted", ("there is no champion yet",
                                                               "beats every baseline (momentum)"))
    refused = promotion_gate({"ic": 0.04}, {"ic": 0.05}, BASELINES, metric="ic", margin=0.005)
    assert parse_decision(refused.summary()) == ("refused", ("ic 0.0400 does not beat the champion's 0.0500 by 0.005",))
    assert parse_decision("rolled back: champion returned to version 1") == (
        "rolled back", ("champion returned to version 1",))
    assert parse_decision(None) == (None, ())
    assert parse_decision("hand-edited note") == (None, ("hand-edited note",))


def test_records_say_which_version_is_champion_challenger_or_was_champion() -> None:
    versions = [_version(1, "promoted: there is no champion yet"),
                _version(3, "refused: ic 0.01 does not beat the champion's 0.02 by 0.005"),
                _version(2, "promoted: ic 0.0300 beats the champion's 0.0200 by at least 0.005"),
                _version(4)]
    found = records("tickcast-lstm-1d", "lstm", versions, history=["1", "2"],
                    aliases={"champion": "2", "challenger": "4"})
    assert [r.version for r in found] == ["4", "3", "2", "1"]  # newest first
    by_version = {r.version: r for r in found}
    assert by_version["4"].aliases == ("challenger",) and by_version["4"].verdict is None
    assert by_version["3"].verdict == "refused" and not by_version["3"].aliases
    assert by_version["2"].aliases == ("champion",) and not by_version["2"].was_champion
    assert by_version["1"].was_champion and by_version["1"].reasons == ("there is no champion yet",)
    assert by_version["1"].created_at == datetime.fromtimestamp(1_700_000_060, UTC)


class _DownClient:
    def get_registered_model(self, name: str):
        raise ConnectionError("connection refused")


def test_an_unreachable_registry_is_unavailable_not_empty() -> None:
    with pytest.raises(Unavailable, match="the model registry cannot be read: connection refused"):
        promotion_history(_DownClient(), "1d")
