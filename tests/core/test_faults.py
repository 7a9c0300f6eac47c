"""The fault points: off unless named, raise or SIGKILL at the Nth pass, and every listed point
reachable in the code (the harness in tests/faults iterates the list)."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tickcast.core import faults
from tickcast.core.faults import FaultInjected, FaultPoint, fault_point, parse_faults

ROOT = Path(__file__).resolve().parents[2]
CODE = ("tickcast", "spark_jobs", "serving", "dashboard")


@pytest.fixture
def fault_env(monkeypatch):
    def set_to(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(faults.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(faults.ENV_VAR, value)
        faults.reset()

    yield set_to
    monkeypatch.delenv(faults.ENV_VAR, raising=False)
    faults.reset()


def test_a_point_does_nothing_unless_the_environment_names_it(fault_env):
    fault_env(None)
    for point in FaultPoint:
        fault_point(point)
    fault_env("scorer.after_score:raise")
    fault_point(FaultPoint.SCORER_AFTER_STORE_WRITE)  # another point: nothing


def test_raise_fires_at_the_nth_pass_only(fault_env):
    fault_env("scorer.after_store_write:raise:after=3, alerts.after_channel_send:raise")
    fault_point(FaultPoint.SCORER_AFTER_STORE_WRITE)
    fault_point(FaultPoint.SCORER_AFTER_STORE_WRITE)
    with pytest.raises(FaultInjected, match=r"scorer.after_store_write \(pass 3\)"):
        fault_point(FaultPoint.SCORER_AFTER_STORE_WRITE)
    fault_point(FaultPoint.SCORER_AFTER_STORE_WRITE)  # the 4th goes by
    with pytest.raises(FaultInjected, match="alerts.after_channel_send"):
        fault_point(FaultPoint.ALERTS_AFTER_CHANNEL_SEND)


@pytest.mark.parametrize("spec", ["no.such.point:kill", "scorer.after_score:explode",
                                  "scorer.after_score:raise:after=0", "scorer.after_score:raise:every=2"])
def test_a_misspelt_fault_is_an_error_not_a_silent_no_op(spec):
    with pytest.raises(ValueError, match="TICKCAST_FAULT"):
        parse_faults(spec)


def test_kill_is_a_sigkill_of_the_process_at_the_point(tmp_path):
    script = ("from tickcast.core.faults import FaultPoint, fault_point\n"
              "fault_point(FaultPoint.SCORER_AFTER_SCORE)\nprint('passed once', flush=True)\n"
              "fault_point(FaultPoint.SCORER_AFTER_SCORE)\nprint('survived')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               faults.ENV_VAR: "scorer.after_score:kill:after=2"}, start_new_session=True)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == "passed once\n"
    assert "fault injected at scorer.after_score (pass 2): SIGKILL" in done.stderr


def _called_points() -> dict[str, list[str]]:
    """FaultPoint member -> where ``fault_point(FaultPoint.MEMBER)`` is called."""
    found: dict[str, list[str]] = {}
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fault_point"):
                    continue
                [arg] = node.args
                assert isinstance(arg, ast.Attribute) and getattr(arg.value, "id", None) == "FaultPoint", (
                    f"{path}:{node.lineno}: name the point as FaultPoint.MEMBER")
                found.setdefault(arg.attr, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_listed_point_is_called_in_the_code_once():
    called = _called_points()
    assert set(called) == {p.name for p in FaultPoint}
    assert {name: where for name, where in called.items() if len(where) > 1} == {}
