"""Retrying calls to other people's HTTP APIs (alert providers, data providers): how long a
server asked us to wait, and a tenacity wait that never retries sooner than that."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


def retry_after_seconds(value: Any) -> float | None:
    """A Retry-After header in seconds (the delta form; an HTTP date, rarer, is read too)."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        try:
            moment = parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


class RetryAfterOr:
    """A tenacity wait: the server's Retry-After (the ``retry_after`` attribute of the error
    that ended the attempt) when it asked for longer, else ``fallback``."""

    def __init__(self, fallback: Any):
        self.fallback = fallback

    def __call__(self, retry_state: Any) -> float:
        wait = float(self.fallback(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after or 0.0)
