"""Dashboard users: the argon2-hashed SQLite store, the first user, and `tickcast users`."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
import threading
from datetime import UTC
from pathlib import Path

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from typer.testing import CliRunner

from tickcast.auth.users import (
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    User,
    UserError,
    UserStore,
    ensure_initial_user,
)
from tickcast.cli import app
from tickcast.core.settings import load_settings

PASSWORD = "correct horse battery"
OTHER_PASSWORD = "staple-glue-river-42"


def cheap_hash() -> PasswordHash:
    """argon2id at its cheapest, for the tests about who may sign in rather than about the hash
    (those use the recommended one, as the platform does)."""
    return PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "auth" / "dashboard_users.sqlite", password_hash=cheap_hash())


@pytest.fixture
def cheap_recommended(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's stores (and ``UserStore(path)``) hash cheaply."""
    monkeypatch.setattr(PasswordHash, "recommended", classmethod(lambda cls: cheap_hash()))


def stored_hash(store: UserStore, username: str) -> str:
    with sqlite3.connect(store.path) as conn:
        return conn.execute("SELECT password_hash FROM users WHERE username = ?", (username,)).fetchone()[0]


class CountingHash(PasswordHash):
    """pwdlib's recommended hasher, counting the verifications it is asked for and against what."""

    def __init__(self) -> None:
        super().__init__((Argon2Hasher(),))
        self.verified: list[str] = []

    def verify(self, password, hash):
        self.verified.append(hash)
        return super().verify(password, hash)

    def verify_and_update(self, password, hash):
        self.verified.append(hash)
        return super().verify_and_update(password, hash)


# --- store -------------------------------------------------------------------------------


def test_the_stored_value_is_an_argon2_hash_not_the_password(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "auth" / "dashboard_users.sqlite")
    user = store.create("alice", PASSWORD)
    store.close()  # checkpoints the WAL, so the main file has the row

    assert user == User(username="alice", created_at=user.created_at, disabled_at=None, last_login_at=None)
    assert user.created_at.utcoffset() == UTC.utcoffset(None) and user.active
    assert {f.name for f in dataclasses.fields(User)} == {
        "username",
        "created_at",
        "disabled_at",
        "last_login_at",
    }
    hashed = stored_hash(store, "alice")
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert not Argon2Hasher().check_needs_rehash(hashed)  # the recommended parameters
    assert PasswordHash.recommended().verify(PASSWORD, hashed)
    assert not PasswordHash.recommended().verify(OTHER_PASSWORD, hashed)
    with sqlite3.connect(store.path) as conn:
        (row,) = conn.execute("SELECT * FROM users").fetchall()
    assert all(PASSWORD not in str(value) for value in row)
    for file in store.path.parent.iterdir():
        assert PASSWORD.encode() not in file.read_bytes()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_construction_and_reads_touch_nothing(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "dashboard_users.sqlite"
    store = UserStore(path)

    assert store.verify("alice", PASSWORD) is None
    assert store.get("alice") is None
    assert store.list() == []
    assert store.count_active() == 0
    for change in (store.disable, store.enable):
        with pytest.raises(UserError, match="no user 'alice': there are no dashboard users yet"):
            change("alice")
    with pytest.raises(UserError, match="no user 'alice'"):
        store.set_password("alice", PASSWORD)
    assert not path.parent.exists()


def test_verify_right_wrong_unknown_and_disabled(store: UserStore) -> None:
    store.create("alice", PASSWORD)
    store.create("bob", OTHER_PASSWORD)

    signed_in = store.verify("alice", PASSWORD)
    assert signed_in is not None and signed_in.username == "alice" and signed_in.last_login_at is not None
    assert store.get("alice") == signed_in
    assert store.get("bob").last_login_at is None

    assert store.verify("alice", OTHER_PASSWORD) is None  # bob's password
    assert store.verify("alice", PASSWORD + " ") is None
    assert store.verify("alice", PASSWORD.upper()) is None
    assert store.verify("carol", PASSWORD) is None
    assert store.verify("alice", "") is None
    assert store.verify("", PASSWORD) is None

    disabled = store.disable("alice")
    assert disabled.disabled_at is not None and not disabled.active
    assert store.verify("alice", PASSWORD) is None
    assert store.get("alice").last_login_at == signed_in.last_login_at  # a refused sign-in is not recorded
    assert store.verify("bob", OTHER_PASSWORD) is not None

    assert store.enable("alice").active
    assert store.verify("alice", PASSWORD) is not None


@pytest.mark.parametrize(
    "username", ["", "a b", "x" * 65, "ümlaut", "name\n", "al/ice", "'; DROP TABLE users;--", None]
)
def test_verify_refuses_malformed_input_without_error(store: UserStore, username) -> None:
    store.create("alice", PASSWORD)
    assert store.verify(username, PASSWORD) is None
    assert store.verify("alice", None) is None
    assert store.verify("alice", PASSWORD + "x" * PASSWORD_MAX_LENGTH) is None
    assert store.get("alice") is not None  # the table is still there


def test_unknown_and_disabled_users_cost_one_verification_like_a_known_one(tmp_path: Path) -> None:
    hasher = CountingHash()
    store = UserStore(tmp_path / "users.sqlite", password_hash=hasher)
    store.create("alice", PASSWORD)
    store.create("bob", PASSWORD)
    store.disable("bob")
    alice_hash, bob_hash = stored_hash(store, "alice"), stored_hash(store, "bob")

    for username, password, against in [
        ("alice", OTHER_PASSWORD, alice_hash),
        ("alice", PASSWORD, alice_hash),
        ("bob", PASSWORD, bob_hash),
        ("nobody", PASSWORD, None),
    ]:
        hasher.verified.clear()
        store.verify(username, password)
        assert len(hasher.verified) == 1, username
        if against is not None:
            assert hasher.verified == [against]
        else:  # a dummy argon2 hash of the same hasher, not one of the users'
            assert hasher.verified[0].startswith("$argon2id$")
            assert hasher.verified[0] not in (alice_hash, bob_hash)


@pytest.mark.parametrize("username", ["", "a b", "x" * 65, "ümlaut", "name\n", "al/ice", None, 42])
def test_bad_usernames_are_refused(store: UserStore, username) -> None:
    with pytest.raises(UserError, match="bad user name .*use 1 to 64 characters from letters, digits"):
        store.create(username, PASSWORD)
    assert store.list() == []


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("x" * (PASSWORD_MIN_LENGTH - 1), "password too short: use at least 12 characters"),
        ("", "password too short"),
        ("x" * (PASSWORD_MAX_LENGTH + 1), "password too long: use at most 256 characters"),
        (None, "a password must be text"),
        (b"bytes-password-123", "a password must be text"),
    ],
)
def test_bad_passwords_are_refused_without_showing_them(store: UserStore, password, message) -> None:
    with pytest.raises(UserError, match=message) as caught:
        store.create("alice", password)
    assert not password or str(password) not in str(caught.value)
    assert store.list() == []


def test_the_bounds_themselves_are_accepted(store: UserStore) -> None:
    longest = "a" * 64
    store.create(longest, "p" * PASSWORD_MIN_LENGTH)
    store.create("Al.ice_-9", "q" * PASSWORD_MAX_LENGTH)

    assert store.verify(longest, "p" * PASSWORD_MIN_LENGTH) is not None
    assert store.verify("Al.ice_-9", "q" * PASSWORD_MAX_LENGTH) is not None


def test_duplicate_usernames_are_refused_whatever_their_case(store: UserStore) -> None:
    store.create("Alice", PASSWORD)

    for duplicate in ("Alice", "alice", "ALICE"):
        with pytest.raises(UserError, match="a user named 'Alice' already exists"):
            store.create(duplicate, OTHER_PASSWORD)
    assert [u.username for u in store.list()] == ["Alice"]
    assert store.verify("Alice", OTHER_PASSWORD) is None
    signed_in = store.verify("alice", PASSWORD)  # names are compared without case, kept as created
    assert signed_in is not None and signed_in.username == "Alice"
    assert store.get("aLiCe").username == "Alice"


def test_the_unique_index_is_a_backstop(store: UserStore) -> None:
    store.create("alice", PASSWORD)
    with sqlite3.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO users(username, password_hash, created_at) VALUES ('ALICE', 'x', 'y')")


def test_concurrent_creates_of_one_name_have_one_winner(store: UserStore) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        try:
            store.create("alice", PASSWORD)
            outcomes.append("created")
        except UserError:
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["created", "refused", "refused", "refused"]
    assert len(store.list()) == 1


def test_set_password(store: UserStore) -> None:
    store.create("alice", PASSWORD)
    old_hash = stored_hash(store, "alice")

    store.set_password("ALICE", OTHER_PASSWORD)

    assert stored_hash(store, "alice") != old_hash
    assert store.verify("alice", PASSWORD) is None
    assert store.verify("alice", OTHER_PASSWORD) is not None
    with pytest.raises(UserError, match="password too short"):
        store.set_password("alice", "short")
    assert store.verify("alice", OTHER_PASSWORD) is not None  # unchanged by the refused change
    with pytest.raises(UserError, match="no user 'bob'"):
        store.set_password("bob", PASSWORD)

    store.disable("alice")
    store.set_password("alice", PASSWORD)
    assert not store.get("alice").active  # a new password does not re-enable
    assert store.verify("alice", PASSWORD) is None


def test_an_outdated_hash_is_replaced_at_the_next_sign_in(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8 * 1024, parallelism=1),))
    UserStore(path, password_hash=weak).create("alice", PASSWORD)
    store = UserStore(path)  # the recommended hasher
    weak_hash = stored_hash(store, "alice")
    assert "m=8192,t=1,p=1" in weak_hash
    assert Argon2Hasher().check_needs_rehash(weak_hash)

    assert store.verify("alice", OTHER_PASSWORD) is None
    assert stored_hash(store, "alice") == weak_hash  # a wrong password changes nothing

    assert store.verify("alice", PASSWORD) is not None
    rehashed = stored_hash(store, "alice")
    assert rehashed != weak_hash and rehashed.startswith("$argon2id$")
    assert not Argon2Hasher().check_needs_rehash(rehashed)
    assert PasswordHash.recommended().verify(PASSWORD, rehashed)

    assert store.verify("alice", PASSWORD) is not None
    assert stored_hash(store, "alice") == rehashed  # a current hash is kept


def test_an_unreadable_hash_refuses_the_sign_in(store: UserStore) -> None:
    store.create("alice", PASSWORD)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE users SET password_hash = 'not-a-hash'")

    assert store.verify("alice", PASSWORD) is None


def test_disable_enable_list_and_count(store: UserStore) -> None:
    for name in ("carol", "alice", "bob"):
        store.create(name, PASSWORD)
    assert store.count_active() == 3

    first = store.disable("alice")
    again = store.disable("alice")
    assert again.disabled_at == first.disabled_at  # already disabled: left as is
    assert store.count_active() == 2
    assert [(u.username, u.active) for u in store.list()] == [
        ("carol", True),
        ("alice", False),
        ("bob", True),
    ]
    with pytest.raises(UserError, match="no user 'dave'"):
        store.disable("dave")
    with pytest.raises(UserError, match="bad user name"):
        store.enable("da ve")

    assert store.enable("alice").active and store.enable("alice").active
    assert store.count_active() == 3


# --- the first user ----------------------------------------------------------------------


def test_ensure_initial_user_creates_admin_once(store: UserStore, tmp_path: Path) -> None:
    password_file = tmp_path / "auth" / "dashboard_admin_password"

    assert ensure_initial_user(store, password_file) == "admin"

    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= PASSWORD_MIN_LENGTH
    assert password_file.read_text() == password + "\n"
    assert store.verify("admin", password) is not None
    assert [u.username for u in store.list()] == ["admin"]
    assert sorted(p.name for p in password_file.parent.iterdir()) == [
        "dashboard_admin_password",
        "dashboard_users.sqlite",
        "dashboard_users.sqlite-shm",
        "dashboard_users.sqlite-wal",
    ]  # no temporary file left behind

    assert ensure_initial_user(store, password_file) is None
    assert password_file.read_text() == password + "\n"
    assert [u.username for u in store.list()] == ["admin"]

    store.disable("admin")  # a store with only disabled users is not empty
    assert ensure_initial_user(UserStore(store.path), password_file) is None
    assert password_file.read_text() == password + "\n"


def test_ensure_initial_user_leaves_a_populated_store_alone(store: UserStore, tmp_path: Path) -> None:
    store.create("alice", PASSWORD)
    password_file = tmp_path / "elsewhere" / "password"

    assert ensure_initial_user(store, password_file, username="root") is None

    assert not password_file.exists() and not password_file.parent.exists()
    assert store.get("root") is None and store.get("admin") is None


def test_ensure_initial_user_losing_a_race_writes_nothing(store: UserStore, tmp_path: Path) -> None:
    class RacedStore(UserStore):
        def list(self):  # another process creates a user right after this check
            return []

    store.create("alice", PASSWORD)
    password_file = tmp_path / "auth" / "dashboard_admin_password"

    assert ensure_initial_user(RacedStore(store.path), password_file) is None

    assert [u.username for u in store.list()] == ["alice"]
    assert not any(
        p.name.startswith((".dashboard_admin_password", "dashboard_admin_password"))
        for p in password_file.parent.iterdir()
    )


def test_ensure_initial_user_replaces_a_stale_password_file(store: UserStore, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("stale\n")
    password_file.chmod(0o644)

    assert ensure_initial_user(store, password_file, username="ops") == "ops"

    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert store.verify("ops", password_file.read_text().strip()) is not None


def test_settings_name_the_files(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)

    assert settings.dashboard_users_path == tmp_path / "auth" / "dashboard_users.sqlite"
    assert settings.dashboard_admin_password_file == tmp_path / "auth" / "dashboard_admin_password"


# --- CLI ---------------------------------------------------------------------------------


def cli(home: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(
        app, ["users", *args], input=input, env={"TICKCAST_HOME": str(home), "COLUMNS": "200"}
    )


def home_store(home: Path) -> UserStore:
    return UserStore(home / "auth" / "dashboard_users.sqlite")


def test_cli_create_with_password_stdin(tmp_path: Path) -> None:
    result = cli(tmp_path, "create", "alice", "--password-stdin", input=PASSWORD + "\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Created dashboard user 'alice'.\n"
    assert PASSWORD not in result.output
    hashed = stored_hash(home_store(tmp_path), "alice")
    assert hashed.startswith("$argon2id$") and not Argon2Hasher().check_needs_rehash(hashed)
    assert home_store(tmp_path).verify("alice", PASSWORD) is not None
    assert home_store(tmp_path).verify("alice", PASSWORD + "\n") is None  # the newline is not part of it


def test_cli_create_with_a_hidden_prompt_asked_twice(tmp_path: Path, cheap_recommended: None) -> None:
    result = cli(tmp_path, "create", "alice", input=f"short\n{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "password too short" in result.output  # re-asked, not ended
    assert "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output
    assert "Created dashboard user 'alice'." in result.stdout
    assert home_store(tmp_path).verify("alice", PASSWORD) is not None


def test_cli_prompt_mismatch_creates_nobody(tmp_path: Path, cheap_recommended: None) -> None:
    result = cli(tmp_path, "create", "alice", input=f"{PASSWORD}\n{OTHER_PASSWORD}\n")

    assert result.exit_code != 0
    assert "do not match" in result.output
    assert PASSWORD not in result.output and OTHER_PASSWORD not in result.output
    assert home_store(tmp_path).list() == []


def test_cli_list_shows_users_not_hashes(tmp_path: Path, cheap_recommended: None) -> None:
    assert "No dashboard users yet" in cli(tmp_path, "list").stdout
    cli(tmp_path, "create", "alice", "--password-stdin", input=PASSWORD + "\n")
    cli(tmp_path, "create", "bob", "--password-stdin", input=OTHER_PASSWORD + "\n")
    store = home_store(tmp_path)
    store.verify("alice", PASSWORD)
    store.disable("bob")

    result = cli(tmp_path, "list")

    assert result.exit_code == 0, result.output
    for column in ("user", "created (UTC)", "last sign-in (UTC)", "status"):
        assert column in result.stdout
    alice_line = next(line for line in result.stdout.splitlines() if "alice" in line)
    bob_line = next(line for line in result.stdout.splitlines() if "bob" in line)
    assert "active" in alice_line and f"{store.get('alice').last_login_at:%Y-%m-%d %H:%M:%S}" in alice_line
    assert f"disabled {store.get('bob').disabled_at:%Y-%m-%d %H:%M:%S}" in bob_line
    for secret in (
        PASSWORD,
        OTHER_PASSWORD,
        stored_hash(store, "alice"),
        stored_hash(store, "bob"),
        "argon2",
    ):
        assert secret not in result.output

    as_json = cli(tmp_path, "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert '"username": "alice"' in as_json.stdout and '"disabled_at": null' in as_json.stdout
    assert "argon2" not in as_json.output and PASSWORD not in as_json.output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("create", "al ice", "--password-stdin"), PASSWORD + "\n", "error: bad user name 'al ice'"),
        (
            ("create", "bob", "--password-stdin"),
            "short-pw\n",
            "error: password too short: use at least 12 characters",
        ),
        (
            ("create", "bob", "--password-stdin"),
            "x" * 5000 + "\n",
            "error: password too long: use at most 256",
        ),
        (("create", "bob", "--password-stdin"), "", "error: --password-stdin: no password on stdin"),
        (
            ("create", "ALICE", "--password-stdin"),
            OTHER_PASSWORD + "\n",
            "error: a user named 'alice' already exists",
        ),
        (("set-password", "bob", "--password-stdin"), OTHER_PASSWORD + "\n", "error: no user 'bob'"),
        (("set-password", "alice", "--password-stdin"), "short-pw\n", "error: password too short"),
        (("disable", "bob"), None, "error: no user 'bob'"),
        (("enable", "bob/x"), None, "error: bad user name 'bob/x'"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    tmp_path: Path, cheap_recommended: None, args, stdin, message
) -> None:
    assert cli(tmp_path, "create", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0

    result = cli(tmp_path, *args, input=stdin)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    assert [u.username for u in home_store(tmp_path).list()] == ["alice"]
    assert home_store(tmp_path).verify("alice", PASSWORD) is not None


def test_cli_set_password_disable_enable(tmp_path: Path, cheap_recommended: None) -> None:
    cli(tmp_path, "create", "alice", "--password-stdin", input=PASSWORD + "\n")
    store = home_store(tmp_path)

    changed = cli(tmp_path, "set-password", "alice", "--password-stdin", input=OTHER_PASSWORD + "\n")
    assert changed.exit_code == 0, changed.output
    assert changed.stdout == "Set a new password for dashboard user 'alice'.\n"
    assert store.verify("alice", PASSWORD) is None and store.verify("alice", OTHER_PASSWORD) is not None

    disabled = cli(tmp_path, "disable", "alice")
    assert disabled.exit_code == 0 and "Disabled dashboard user 'alice'" in disabled.stdout
    assert store.verify("alice", OTHER_PASSWORD) is None
    assert "was already disabled" in cli(tmp_path, "disable", "alice").stdout

    enabled = cli(tmp_path, "enable", "alice")
    assert enabled.exit_code == 0 and "Enabled dashboard user 'alice'" in enabled.stdout
    assert store.verify("alice", OTHER_PASSWORD) is not None
    assert "already active" in cli(tmp_path, "enable", "alice").stdout


def test_cli_help(tmp_path: Path) -> None:
    result = cli(tmp_path, "--help")
    assert result.exit_code == 0
    assert "argon2" in result.stdout
    for command in ("create", "list", "disable", "enable", "set-password"):
        assert command in result.stdout
    create_help = cli(tmp_path, "create", "--help")
    assert "--password-stdin" in create_help.stdout and "12 to 256 characters" in create_help.stdout
