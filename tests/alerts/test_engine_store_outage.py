"""The alert engine waits out an unreachable store (its database restarting) instead of exiting:
the call is made again until it succeeds, and given up only when the engine is asked to stop."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy.exc import OperationalError

from tickcast.alerts.engine import AlertEngine


class Flaky:
    """Raises like psycopg does while PostgreSQL shuts down, ``failures`` times, then answers."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("SELECT 1", {}, Exception("FATAL:  the database system is shutting down"))
        return "stored"


def test_a_store_outage_is_waited_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    call = Flaky(failures=2)
    with caplog.at_level(logging.WARNING, logger="tickcast.alerts"):
        assert AlertEngine._while_store_away(threading.Event(), call) == "stored"
    assert call.calls == 3
    warnings = [r.getMessage() for r in caplog.records if "alert store unreachable" in r.getMessage()]
    assert len(warnings) == 2 and "the database system is shutting down" in warnings[0]


def test_a_stop_request_during_the_outage_ends_the_wait_with_the_error() -> None:
    stop = threading.Event()
    stop.set()
    call = Flaky(failures=10)
    with pytest.raises(OperationalError):
        AlertEngine._while_store_away(stop, call)
    assert call.calls == 1


def test_other_errors_are_not_retried() -> None:
    def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        AlertEngine._while_store_away(threading.Event(), broken)
