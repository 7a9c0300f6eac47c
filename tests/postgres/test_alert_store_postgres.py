"""The alert store's tests again, on a PostgreSQL database (psycopg 3) instead of a SQLite file:
the Alembic migrations, rules CRUD and its refusals, and the evaluator's one-transaction writes."""

from __future__ import annotations

import pytest

from tests.alerts.test_alert_store import (  # noqa: F401 - collected here again, on the PostgreSQL `url` below
    clock,
    store,
    test_a_confident_buy_makes_one_alert_with_a_delivery_per_recipient,
    test_a_lost_transaction_is_made_again_under_the_same_id,
    test_a_throttled_incident_is_recorded_without_deliveries,
    test_an_event_seen_again_or_after_a_restart_makes_nothing_twice,
    test_migrations_make_the_tables_and_run_again_as_a_no_op,
    test_pipeline_incident_fires_once_and_resolves_once,
    test_rule_refusals_say_why,
    test_rules_crud,
    test_signal_change_rule_uses_the_stored_previous_signal,
    test_the_rule_index_agrees_with_watches_symbol,
    test_watchlist_rules_follow_the_watchlist,
)


@pytest.fixture
def url(pg_url: str) -> str:
    return pg_url

