"""API keys on PostgreSQL: the SQLite store's tests run again on a PostgreSQL database, one
sequence of operations gives the same answers on both, and a server that cannot be reached is a
clear StoreUnavailable."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_apikeys import (  # noqa: F401 - collected here again, on the PostgreSQL `store` below
    test_create_then_verify_roundtrip,
    test_duplicate_active_name_is_refused_until_revoked,
    test_key_id_is_tried_before_a_name_that_looks_like_one,
    test_list_is_oldest_first_with_revoked_keys,
    test_mangled_real_keys_are_refused,
    test_revoke_by_name_and_by_id,
    test_revoke_unknown_or_twice_is_an_error,
    test_revoked_key_is_refused,
    test_verify_from_many_threads,
    test_wrong_secret_with_a_real_key_id_is_refused,
)
from tickcast.auth.apikeys import ApiKeyError, ApiKeyStore, StoreUnavailable
from tickcast.cli import app


@pytest.fixture
def store(pg_url: str):
    store = ApiKeyStore(url=pg_url)
    yield store
    store.close()


def _script(store: ApiKeyStore) -> list:
    """One sequence of operations and everything it answers, key ids and times left out."""
    seen: list = []
    first, first_key = store.create("alpha", ["read"])
    second, second_key = store.create("beta", "read,score", rate_limit="10/second")
    seen.append([(k.name, sorted(k.scopes), k.rate_limit, k.active) for k in store.list()])
    seen.append(store.verify(first_key) == first)
    seen.append(store.verify(second_key[:-1] + ("A" if second_key[-1] != "A" else "B")))
    for attempt in (lambda: store.create("alpha", ["read"]), lambda: store.create("gamma", ["root"]),
                    lambda: store.revoke("nobody")):
        with pytest.raises(ApiKeyError) as refused:
            attempt()
        seen.append(str(refused.value).split(" (key id")[0])
    revoked = store.revoke("alpha")
    seen.append((revoked.name, revoked.active, store.verify(first_key)))
    with pytest.raises(ApiKeyError, match="already revoked"):
        store.revoke(first.key_id)
    again, _ = store.create("alpha", ["admin"])
    seen.append([(k.name, sorted(k.scopes), k.active) for k in store.list()])
    seen.append(store.verify(second_key) == second and again.name == "alpha")
    return seen


def test_sqlite_and_postgresql_give_the_same_answers(tmp_path: Path, pg_url: str) -> None:
    on_sqlite = _script(ApiKeyStore(tmp_path / "auth" / "api_keys.sqlite"))
    on_postgres = _script(ApiKeyStore(url=pg_url))

    assert on_postgres == on_sqlite
    assert on_sqlite[0] == [("alpha", ["read"], None, True), ("beta", ["read", "score"], "10/second", True)]
    assert on_sqlite[-2] == [("alpha", ["read"], False), ("beta", ["read", "score"], True),
                             ("alpha", ["admin"], True)]


def test_a_second_store_on_the_same_database_sees_changes(store: ApiKeyStore) -> None:
    other = ApiKeyStore(url=store.url.render_as_string(hide_password=False))
    assert other.list() == []

    record, plaintext = store.create("ci", ["read"])
    assert other.verify(plaintext) == record
    other.revoke("ci")
    assert store.verify(plaintext) is None


def test_the_cli_uses_the_configured_database(tmp_path: Path, pg_url: str) -> None:
    env = {"TICKCAST_HOME": str(tmp_path), "TICKCAST_API_KEYS_DATABASE_URL": pg_url, "COLUMNS": "200"}
    created = CliRunner().invoke(app, ["apikey", "create", "--name", "ci"], env=env)

    assert created.exit_code == 0, created.output
    assert ApiKeyStore(url=pg_url).verify(created.stdout.strip()) is not None
    assert not (tmp_path / "auth").exists()  # nothing went to the SQLite file


def test_a_server_that_is_not_there_is_store_unavailable(tmp_path: Path) -> None:
    store = ApiKeyStore(url=f"postgresql+psycopg://tickcast:s3cret@/auth?host={tmp_path}&port=1")

    with pytest.raises(StoreUnavailable, match="cannot be reached") as failed:
        store.verify("tck_0123456789ab_" + "x" * 43)
    assert "s3cret" not in str(failed.value)
    env = {"TICKCAST_HOME": str(tmp_path), "TICKCAST_API_KEYS_DATABASE_URL": store.url.render_as_string(
        hide_password=False)}
    listed = CliRunner().invoke(app, ["apikey", "list"], env=env)
    assert listed.exit_code == 1
    assert "cannot be reached" in listed.stderr and "s3cret" not in listed.output


def test_a_refused_first_operation_leaves_the_tables_in_place(pg_url: str) -> None:
    store = ApiKeyStore(url=pg_url)
    with pytest.raises(ApiKeyError, match="no active API key"):
        store.revoke("nobody")  # the first statement on a new database, rolled back

    assert store.list() == []
    record, plaintext = store.create("ci", ["read"])
    assert store.verify(plaintext) == record


def test_the_api_guard_answers_503_not_500_while_the_store_is_down(postgres, pg_settings, pg_url: str) -> None:
    """Past its cache, a key the store cannot check is a 503 that says why (and no guess charged
    to the caller's address); an open WebSocket keeps the key it had."""
    from fastapi import HTTPException
    from pydantic import SecretStr

    from serving.security import Guard

    settings = pg_settings.model_copy(update={"api_keys_database_url": SecretStr(pg_url), "api_key_cache_seconds": 0,
                                              "api_unauthenticated_rate_limit": "1/hour"})
    record, key = ApiKeyStore(url=pg_url).create("reader", ["read"])
    guard = Guard(settings)
    assert guard.authenticate(key, "10.0.0.1") == record
    guard.store = ApiKeyStore(url=pg_url.replace(f"port={postgres.layout.port}", "port=1"))  # as if it were down

    for _ in range(3):
        with pytest.raises(HTTPException) as refused:
            guard.authenticate(key, "10.0.0.1")
        assert refused.value.status_code == 503
        assert "API-key store cannot be reached" in refused.value.detail
        assert refused.value.headers["Retry-After"] == "2"
    assert guard.verify_now(key) == record
