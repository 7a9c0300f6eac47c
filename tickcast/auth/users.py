"""Users of the analyst dashboard: a SQLite file of argon2 password hashes, never the passwords.

Hashing and verification are pwdlib's (``PasswordHash.recommended()``: argon2id with
argon2-cffi's default parameters); this module only decides who may sign in. A hash made with
older parameters is replaced by a current one at the user's next successful sign-in.

User names are 1 to 64 of ASCII letters, digits, ``_``, ``.`` and ``-``; they keep the case they
were created with but are compared without it (``Alice`` signs in as ``alice``, and both
cannot exist).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.exceptions import PwdlibError

from tickcast.auth.hashdb import HashDatabase

log = logging.getLogger(__name__)


USERNAME_MAX_LENGTH = 64
PASSWORD_MIN_LENGTH = 12
# Bounds the work an attacker can ask of the hasher, not the strength of a password.
PASSWORD_MAX_LENGTH = 256

_USERNAME_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{USERNAME_MAX_LENGTH}}}")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS users (
        username TEXT NOT NULL COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        disabled_at TEXT,
        last_login_at TEXT
    )
    """,
    # Backstop for the duplicate check in create(): two concurrent creates cannot both win.
    "CREATE UNIQUE INDEX IF NOT EXISTS users_username ON users(username)",
)

_COLUMNS = "username, created_at, disabled_at, last_login_at"


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True)
class User:
    """A dashboard user as the rest of the platform sees it: never the password or its hash."""

    username: str
    created_at: datetime
    disabled_at: datetime | None
    last_login_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def validate_username(username: object) -> str:
    """``username`` if it is a valid user name, else UserError."""
    if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
        shown = username[:80] if isinstance(username, str) else username
        raise UserError(
            f"bad user name {shown!r}: use 1 to {USERNAME_MAX_LENGTH} characters from "
            "letters, digits, '_', '.' and '-'"
        )
    return username


def validate_password(password: object) -> str:
    """``password`` if its length is acceptable, else UserError (which never shows the password)."""
    if not isinstance(password, str):
        raise UserError("a password must be text")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise UserError(f"password too short: use at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise UserError(f"password too long: use at most {PASSWORD_MAX_LENGTH} characters")
    return password


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime) -> str:
    # Fixed width so that ORDER BY created_at on the text is chronological.
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _row_to_user(row: tuple) -> User:
    username, created_at, disabled_at, last_login_at = row
    return User(
        username=username,
        created_at=datetime.fromisoformat(created_at),
        disabled_at=_when(disabled_at),
        last_login_at=_when(last_login_at),
    )


class UserStore(HashDatabase):
    """Dashboard users in a SQLite file (``HashDatabase``: WAL, 0600, one connection per thread).
    Cheap to construct (touches no file). ``password_hash`` is pwdlib's recommended hasher unless
    given."""

    def __init__(self, path: Path, password_hash: PasswordHash | None = None):
        super().__init__(path, _SCHEMA)
        self._hasher = password_hash or PasswordHash.recommended()
        self._dummy_lock = threading.Lock()
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        """A hash of a random password made by this store's hasher (so verifying against it
        costs what verifying a real user's does), made once per store."""
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
            return self._dummy

    # --- operations ----------------------------------------------------------------------

    def create(self, username: str, password: str) -> User:
        """A new, active user with this password (of which only an argon2 hash is stored)."""
        validate_username(username)
        password_hash = self._hasher.hash(validate_password(password))  # outside the write lock

        def insert(conn: sqlite3.Connection) -> User:
            return self._insert(conn, username, password_hash)

        return self._write(insert)

    def _insert(self, conn: sqlite3.Connection, username: str, password_hash: str) -> User:
        taken = conn.execute("SELECT username FROM users WHERE username = ?", (username,)).fetchone()
        if taken:
            raise UserError(
                f"a user named {taken[0]!r} already exists; pick another name, or use "
                "set-password to change their password"
            )
        user = User(username=username, created_at=_now(), disabled_at=None, last_login_at=None)
        try:
            conn.execute(
                "INSERT INTO users(username, password_hash, created_at) VALUES (?, ?, ?)",
                (username, password_hash, _iso(user.created_at)),
            )
        except sqlite3.IntegrityError:
            raise UserError(f"a user named {username!r} already exists; pick another name") from None
        return user

    def _create_first(self, username: str, password: str) -> User | None:
        """Create this user only if there is no user at all (one transaction); else None."""
        validate_username(username)
        password_hash = self._hasher.hash(validate_password(password))

        def insert_if_empty(conn: sqlite3.Connection) -> User | None:
            if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone():
                return None
            return self._insert(conn, username, password_hash)

        return self._write(insert_if_empty)

    def verify(self, username: str, password: str) -> User | None:
        """The user signing in with these credentials, or None (malformed, unknown, disabled,
        wrong password). Records the sign-in; replaces an outdated hash with a current one.

        An unknown user costs one verification against a dummy hash and a disabled one the
        verification of their own hash, so the time taken does not tell which names exist.
        """
        if (
            not isinstance(username, str)
            or not _USERNAME_RE.fullmatch(username)
            or not isinstance(password, str)
            or not password
            or len(password) > PASSWORD_MAX_LENGTH
        ):
            return None  # decided by the input alone: says nothing about who exists
        dummy = self._dummy_hash()
        row = None
        if self.path.exists():
            row = (
                self._connection()
                .execute(f"SELECT {_COLUMNS}, password_hash FROM users WHERE username = ?", (username,))
                .fetchone()
            )
        if row is None:
            self._hasher.verify(password, dummy)
            return None
        stored = row[-1]
        try:
            valid, updated = self._hasher.verify_and_update(password, stored)
        except PwdlibError:
            log.warning(
                "dashboard user %r has an unreadable password hash; set a new password "
                "with `tickcast users set-password`",
                row[0],
            )
            return None
        user = _row_to_user(row[:-1])
        if not valid or not user.active:
            return None
        signed_in = _now()
        conn = self._connection()
        if updated is None:
            conn.execute(
                "UPDATE users SET last_login_at = ? WHERE username = ?", (_iso(signed_in), user.username)
            )
        else:
            # Compare-and-set on the hash: a set-password that ran meanwhile is not overwritten.
            conn.execute(
                "UPDATE users SET last_login_at = ?, "
                "password_hash = CASE WHEN password_hash = ? THEN ? ELSE password_hash END WHERE username = ?",
                (_iso(signed_in), stored, updated, user.username),
            )
            log.info("rehashed the password of dashboard user %r with current parameters", user.username)
        return User(
            username=user.username, created_at=user.created_at, disabled_at=None, last_login_at=signed_in
        )

    def set_password(self, username: str, password: str) -> User:
        """Replace a user's password (a disabled user stays disabled)."""
        validate_username(username)
        validate_password(password)
        if not self.path.exists():
            raise UserError(f"no user {username!r}: there are no dashboard users yet")
        password_hash = self._hasher.hash(password)

        def update(conn: sqlite3.Connection) -> User:
            user = self._get_or_fail(conn, username)
            conn.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, user.username)
            )
            return user

        return self._write(update)

    def disable(self, username: str) -> User:
        """Refuse this user's sign-ins from now on; a user already disabled is left as is."""
        return self._set_disabled(username, _iso(_now()))

    def enable(self, username: str) -> User:
        """Let a disabled user sign in again; a user already active is left as is."""
        return self._set_disabled(username, None)

    def _set_disabled(self, username: str, disabled_at: str | None) -> User:
        validate_username(username)
        if not self.path.exists():
            raise UserError(f"no user {username!r}: there are no dashboard users yet")

        def update(conn: sqlite3.Connection) -> User:
            user = self._get_or_fail(conn, username)
            if (disabled_at is None) == user.active:
                return user
            conn.execute("UPDATE users SET disabled_at = ? WHERE username = ?", (disabled_at, user.username))
            return User(
                username=user.username,
                created_at=user.created_at,
                disabled_at=_when(disabled_at),
                last_login_at=user.last_login_at,
            )

        return self._write(update)

    def _get_or_fail(self, conn: sqlite3.Connection, username: str) -> User:
        row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise UserError(f"no user {username!r} (see `tickcast users list`)")
        return _row_to_user(row)

    def get(self, username: str) -> User | None:
        """The user with this name (any case), or None."""
        if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username) or not self.path.exists():
            return None
        row = (
            self._connection()
            .execute(f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username,))
            .fetchone()
        )
        return _row_to_user(row) if row else None

    def count_active(self) -> int:
        """How many users may sign in."""
        if not self.path.exists():
            return 0
        return (
            self._connection().execute("SELECT COUNT(*) FROM users WHERE disabled_at IS NULL").fetchone()[0]
        )

    # Last in the class: the name shadows the builtin for annotations that follow it.
    def list(self) -> list[User]:
        """Every user, disabled ones included, oldest first."""
        if not self.path.exists():
            return []
        rows = (
            self._connection().execute(f"SELECT {_COLUMNS} FROM users ORDER BY created_at, rowid").fetchall()
        )
        return [_row_to_user(row) for row in rows]


def ensure_initial_user(store: UserStore, password_file: Path, username: str = "admin") -> str | None:
    """When the store has no user at all, create ``username`` with a random password, written
    to ``password_file`` (mode 0600) and return the name; otherwise do nothing and return None.

    The user is created only once its password is on disk, in a temporary 0600 file beside
    ``password_file`` that then replaces it (were that last rename to fail, the temporary file
    is kept: a user is never left with a password nobody has).
    """
    validate_username(username)
    if store.list():
        return None
    password = secrets.token_urlsafe(24)
    password_file = Path(password_file)
    password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=password_file.parent, prefix=f".{password_file.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        created = store._create_first(username, password)
    except BaseException:
        os.unlink(temp)
        raise
    if created is None:  # another process created the first user meanwhile
        os.unlink(temp)
        return None
    os.replace(temp, password_file)
    return username
