"""API keys: the hashed SQLite store and `tickcast apikey`."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import UTC
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickcast.auth.apikeys import SCOPES, ApiKey, ApiKeyError, ApiKeyStore, hash_key
from tickcast.cli import app


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    return ApiKeyStore(tmp_path / "auth" / "api_keys.sqlite")


def secret_of(plaintext: str) -> str:
    return plaintext.split("_", 2)[2]


# --- store -------------------------------------------------------------------------------


def test_create_then_verify_roundtrip(store: ApiKeyStore) -> None:
    record, plaintext = store.create("dashboard", ["read", "score"], "1000/second")

    assert plaintext.startswith(f"tck_{record.key_id}_")
    assert len(record.key_id) == 12 and int(record.key_id, 16) >= 0
    assert record.scopes == frozenset({"read", "score"})
    assert record.rate_limit == "1000/second"
    assert record.created_at.tzinfo is not None and record.created_at.utcoffset() == UTC.utcoffset(None)
    assert record.revoked_at is None
    assert store.verify(plaintext) == record
    assert record.has("score") and not record.has("admin")


def test_construction_touches_nothing_and_missing_file_verifies_none(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "api_keys.sqlite"
    store = ApiKeyStore(path)

    assert store.verify("tck_0123456789ab_" + "x" * 43) is None
    assert store.list() == []
    with pytest.raises(ApiKeyError, match="no API key"):
        store.revoke("anything")
    assert not path.parent.exists()


def test_file_is_private_and_holds_no_plaintext(store: ApiKeyStore) -> None:
    _, plaintext = store.create("ci", ["read"])
    store.close()  # checkpoints the WAL, so the main file has the row

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    secret = secret_of(plaintext)
    for file in store.path.parent.iterdir():
        content = file.read_bytes()
        assert secret.encode() not in content
        assert plaintext.encode() not in content
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0])
    assert hash_key(plaintext) in rows[0]


def test_wrong_secret_with_a_real_key_id_is_refused(store: ApiKeyStore) -> None:
    record, plaintext = store.create("ci", ["read"])
    secret = secret_of(plaintext)
    forged = f"tck_{record.key_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"

    assert store.verify(forged) is None
    assert store.verify(plaintext) is not None


@pytest.mark.parametrize("presented", [
    "", "tck_", "tck__", "nope", "Bearer tck_0123456789ab_abc", "tck_0123456789AB_" + "x" * 43,
    "tck_0123456789a_" + "x" * 43, "tck_0123456789ab" + "x" * 43, "tck_0123456789ab_short",
    "tck_0123456789ab_" + "x" * 43 + " ", "tck_0123456789ab_" + "x" * 500, "tck_0123456789ab_" + "é" * 43,
    None, 12345, b"tck_0123456789ab_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
])
def test_malformed_keys_are_refused(store: ApiKeyStore, presented) -> None:
    store.create("ci", ["read"])
    assert store.verify(presented) is None


def test_mangled_real_keys_are_refused(store: ApiKeyStore) -> None:
    _, plaintext = store.create("ci", ["read"])

    for mangled in (plaintext[:-1], plaintext + "x", plaintext.upper(), plaintext.replace("tck_", "tcx_"),
                    f" {plaintext}", plaintext[4:]):
        assert store.verify(mangled) is None, mangled


def test_revoked_key_is_refused(store: ApiKeyStore) -> None:
    record, plaintext = store.create("ci", ["read"])

    revoked = store.revoke(record.key_id)

    assert revoked.key_id == record.key_id and revoked.revoked_at is not None
    assert store.verify(plaintext) is None


@pytest.mark.parametrize(("given", "expected"), [
    (["read"], {"read"}),
    (("read", "score"), {"read", "score"}),
    (["score", "read", "read"], {"read", "score"}),
    ([" Read ", "SCORE"], {"read", "score"}),
    ("read,score", {"read", "score"}),
    ("read, ,score,", {"read", "score"}),
    (iter(["score"]), {"score"}),
])
def test_scopes_are_parsed(store: ApiKeyStore, given, expected) -> None:
    record, plaintext = store.create("ci", given)

    assert record.scopes == frozenset(expected)
    assert store.verify(plaintext).scopes == frozenset(expected)


@pytest.mark.parametrize(("given", "message"), [
    (["superuser"], "unknown scope 'superuser'"),
    (["read", "write", "delete"], "unknown scopes 'delete', 'write'"),
    ([], "at least one scope"),
    ("", "at least one scope"),
    (" , ", "at least one scope"),
])
def test_bad_scopes_are_refused(store: ApiKeyStore, given, message) -> None:
    with pytest.raises(ApiKeyError, match=message) as raised:
        store.create("ci", given)
    assert ", ".join(SCOPES) in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert store.list() == []


@pytest.mark.parametrize("rate_limit", ["1000/second", "100 per minute", "10/hour", "5/2 seconds"])
def test_good_rate_limits_are_kept(store: ApiKeyStore, rate_limit: str) -> None:
    record, _ = store.create("ci", ["read"], rate_limit)
    assert record.rate_limit == rate_limit
    assert store.list()[0].rate_limit == rate_limit


@pytest.mark.parametrize("rate_limit", ["fast", "1000", "-1/second", "", "1000/fortnight", "0/second"])
def test_bad_rate_limits_are_refused(store: ApiKeyStore, rate_limit: str) -> None:
    with pytest.raises(ApiKeyError, match="bad rate limit"):
        store.create("ci", ["read"], rate_limit)
    assert store.list() == []


def test_no_rate_limit_means_server_default(store: ApiKeyStore) -> None:
    record, plaintext = store.create("ci", ["read"])
    assert record.rate_limit is None
    assert store.verify(plaintext).rate_limit is None


@pytest.mark.parametrize("name", ["", "x" * 65, "has space", "slash/name", "semi;colon", "ünïcode"])
def test_bad_names_are_refused(store: ApiKeyStore, name: str) -> None:
    with pytest.raises(ApiKeyError, match="bad key name"):
        store.create(name, ["read"])


def test_names_may_use_the_documented_characters(store: ApiKeyStore) -> None:
    record, _ = store.create("Team-A_ci.prod" + "x" * 50, ["read"])
    assert len(record.name) == 64


def test_duplicate_active_name_is_refused_until_revoked(store: ApiKeyStore) -> None:
    first, first_key = store.create("ci", ["read"])

    with pytest.raises(ApiKeyError, match=f"active key named 'ci' already exists.*{first.key_id}"):
        store.create("ci", ["score"])
    store.revoke("ci")
    second, second_key = store.create("ci", ["score"])

    assert second.key_id != first.key_id
    assert store.verify(first_key) is None
    assert store.verify(second_key) == second
    assert [k.name for k in store.list()] == ["ci", "ci"]


def test_list_is_oldest_first_with_revoked_keys(store: ApiKeyStore) -> None:
    created = [store.create(name, ["read"])[0] for name in ("zeta", "alpha", "mid")]
    store.revoke("alpha")

    listed = store.list()

    assert [k.key_id for k in listed] == [k.key_id for k in created]
    assert [k.revoked_at is not None for k in listed] == [False, True, False]
    assert all(isinstance(k, ApiKey) for k in listed)


def test_revoke_by_name_and_by_id(store: ApiKeyStore) -> None:
    by_name, name_key = store.create("by-name", ["read"])
    by_id, id_key = store.create("by-id", ["read"])
    kept, kept_key = store.create("kept", ["read"])

    assert store.revoke("by-name").key_id == by_name.key_id
    assert store.revoke(by_id.key_id).name == "by-id"

    assert store.verify(name_key) is None and store.verify(id_key) is None
    assert store.verify(kept_key) == kept


def test_revoke_unknown_or_twice_is_an_error(store: ApiKeyStore) -> None:
    record, _ = store.create("ci", ["read"])
    store.revoke(record.key_id)

    with pytest.raises(ApiKeyError, match="already revoked"):
        store.revoke(record.key_id)
    with pytest.raises(ApiKeyError, match="no active API key"):
        store.revoke("ci")
    with pytest.raises(ApiKeyError, match="no active API key"):
        store.revoke("0123456789ab")


def test_key_id_is_tried_before_a_name_that_looks_like_one(store: ApiKeyStore) -> None:
    target, _ = store.create("target", ["read"])
    store.create(target.key_id, ["read"])  # a name that happens to equal another key's id

    assert store.revoke(target.key_id).name == "target"
    assert store.revoke(target.key_id).name == target.key_id  # now only the name matches an active key
    with pytest.raises(ApiKeyError, match="already revoked"):
        store.revoke(target.key_id)


def test_verify_from_many_threads(store: ApiKeyStore) -> None:
    record, plaintext = store.create("ci", ["read"])
    results: list[ApiKey | None] = []

    def work() -> None:
        results.extend(store.verify(plaintext) for _ in range(50))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert results == [record] * 200


def test_a_second_store_on_the_same_file_sees_changes(store: ApiKeyStore) -> None:
    other = ApiKeyStore(store.path)
    assert other.list() == []

    record, plaintext = store.create("ci", ["read"])
    assert other.verify(plaintext) == record
    other.revoke("ci")
    assert store.verify(plaintext) is None


# --- CLI ---------------------------------------------------------------------------------


def cli(home: Path, *args: str):
    return CliRunner().invoke(app, ["apikey", *args], env={"TICKCAST_HOME": str(home), "COLUMNS": "200"})


def test_cli_create_prints_a_key_that_verifies(tmp_path: Path) -> None:
    result = cli(tmp_path, "create", "--name", "dashboard", "--scopes", "read,score", "--rate-limit", "1000/second")

    assert result.exit_code == 0, result.output
    plaintext = result.stdout.strip().splitlines()[-1]
    assert result.stdout == plaintext + "\n"
    assert "will not be shown again" in result.stderr
    assert "X-API-Key" in result.stderr
    record = ApiKeyStore(tmp_path / "auth" / "api_keys.sqlite").verify(plaintext)
    assert record is not None
    assert record.key_id in result.stderr and "read, score" in result.stderr
    assert record.name == "dashboard" and record.scopes == {"read", "score"} and record.rate_limit == "1000/second"


def test_cli_list_shows_keys_but_not_the_key(tmp_path: Path) -> None:
    assert "No API keys yet" in cli(tmp_path, "list").stdout
    created = cli(tmp_path, "create", "--name", "ci")
    plaintext = created.stdout.strip()
    key_id = plaintext.split("_")[1]

    result = cli(tmp_path, "list")

    assert result.exit_code == 0, result.output
    assert key_id in result.stdout and "ci" in result.stdout and "read" in result.stdout
    assert "default" in result.stdout
    assert secret_of(plaintext) not in result.output
    assert hash_key(plaintext) not in result.output

    as_json = cli(tmp_path, "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert '"key_id": "' + key_id in as_json.stdout
    assert secret_of(plaintext) not in as_json.output and hash_key(plaintext) not in as_json.output


def test_cli_revoke(tmp_path: Path) -> None:
    plaintext = cli(tmp_path, "create", "--name", "ci").stdout.strip()
    key_id = plaintext.split("_")[1]
    store = ApiKeyStore(tmp_path / "auth" / "api_keys.sqlite")

    result = cli(tmp_path, "revoke", "ci")

    assert result.exit_code == 0, result.output
    assert key_id in result.stdout
    assert store.verify(plaintext) is None
    again = cli(tmp_path, "revoke", key_id)
    assert again.exit_code == 1
    assert "already revoked" in again.stderr


def test_cli_bad_scope_fails_clearly(tmp_path: Path) -> None:
    result = cli(tmp_path, "create", "--name", "ci", "--scopes", "read,superuser")

    assert result.exit_code == 1
    assert "error: unknown scope 'superuser'" in result.stderr
    assert result.stdout == ""
    assert ApiKeyStore(tmp_path / "auth" / "api_keys.sqlite").list() == []


def test_cli_bad_rate_limit_and_unknown_key_fail_clearly(tmp_path: Path) -> None:
    bad_limit = cli(tmp_path, "create", "--name", "ci", "--rate-limit", "lots")
    assert bad_limit.exit_code == 1 and "error: bad rate limit 'lots'" in bad_limit.stderr

    unknown = cli(tmp_path, "revoke", "nobody")
    assert unknown.exit_code == 1 and "error: no API key 'nobody'" in unknown.stderr


def test_cli_help_mentions_the_header(tmp_path: Path) -> None:
    result = cli(tmp_path, "--help")
    assert result.exit_code == 0
    assert "X-API-Key" in result.stdout
    for command in ("create", "list", "revoke"):
        assert command in result.stdout
