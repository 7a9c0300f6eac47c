"""API keys for the scoring API: SHA-256 hashes, never the keys themselves, in a SQLite file
(one machine) or PostgreSQL (several API hosts; ``settings.api_keys_db_url``).

A key looks like ``tck_<key_id>_<secret>``. The key id (12 hex chars) is public: it
is what ``tickcast apikey list`` prints and what ``revoke`` takes. The plaintext key is
shown once, by ``create``; only ``sha256(key)`` is stored, so a leaked file does not
leak working keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.auth.hashdb import SqlHashDatabase, StoreUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tickcast.core.settings import Settings

__all__ = ["SCOPES", "ApiKey", "ApiKeyError", "ApiKeyStore", "StoreUnavailable", "hash_key", "parse_scopes",
           "redact_keys", "validate_rate_limit"]

SCOPES = ("read", "score", "admin")

KEY_PREFIX = "tck_"
KEY_ID_LENGTH = 12
NAME_MAX_LENGTH = 64

_NAME_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{NAME_MAX_LENGTH}}}")
_KEY_ID_RE = re.compile(rf"[0-9a-f]{{{KEY_ID_LENGTH}}}")
# token_urlsafe(32) gives 43 chars; the bound only keeps absurd header values from being hashed.
_KEY_RE = re.compile(rf"{KEY_PREFIX}([0-9a-f]{{{KEY_ID_LENGTH}}})_[A-Za-z0-9_-]{{16,128}}")
# A key, or any start of one, inside free text (a URL, a log line): from the id on, whatever follows.
_KEY_IN_TEXT_RE = re.compile(rf"{KEY_PREFIX}([0-9a-fA-F]{{{KEY_ID_LENGTH}}})_[A-Za-z0-9_-]*", re.IGNORECASE)

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        scopes TEXT NOT NULL,
        rate_limit TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )
    """,
    # Backstop for the duplicate-name check in create(): two concurrent creates cannot both win.
    """
    CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name
    ON api_keys(name) WHERE revoked_at IS NULL
    """,
)

_COLUMNS = "key_id, name, scopes, rate_limit, created_at, revoked_at"


class ApiKeyError(ValueError):
    """A key cannot be created or revoked as asked; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    rate_limit: str | None
    created_at: datetime
    revoked_at: datetime | None

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def redact_keys(text: str) -> str:
    """``text`` with every API key replaced by ``<api key ID>``: the public key id stays, to tell
    which key it was, and neither the secret nor the key's own shape remains."""
    if KEY_PREFIX not in text.lower():
        return text
    return _KEY_IN_TEXT_RE.sub(lambda m: f"<api key {m.group(1).lower()}>", text)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(scopes: Iterable[str] | str) -> frozenset[str]:
    """Scopes from an iterable or a comma-separated string; unknown or none -> ApiKeyError."""
    items = scopes.split(",") if isinstance(scopes, str) else scopes
    parsed = frozenset(s.strip().lower() for s in items if s and s.strip())
    if not parsed:
        raise ApiKeyError(f"a key needs at least one scope (known scopes: {', '.join(SCOPES)})")
    unknown = sorted(parsed - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                          f"(known scopes: {', '.join(SCOPES)})")
    return parsed


def validate_rate_limit(rate_limit: str | None) -> str | None:
    """The rate limit as given (stripped), if the ``limits`` library can parse it and it lets anything through."""
    if rate_limit is None:
        return None
    import limits

    text = rate_limit.strip()
    try:
        parsed = limits.parse(text)
    except ValueError:
        raise ApiKeyError(f"bad rate limit {rate_limit!r}: expected e.g. '1000/second', '100/minute' "
                          "or '10 per hour'") from None
    if parsed.amount < 1:
        raise ApiKeyError(f"bad rate limit {rate_limit!r}: it would refuse every request; revoke the key instead")
    return text


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime) -> str:
    # Fixed width so that ORDER BY created_at on the text is chronological.
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _row_to_key(row: tuple) -> ApiKey:
    key_id, name, scopes, rate_limit, created_at, revoked_at = row
    return ApiKey(
        key_id=key_id,
        name=name,
        scopes=frozenset(s for s in scopes.split(",") if s),
        rate_limit=rate_limit,
        created_at=datetime.fromisoformat(created_at),
        revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
    )


class ApiKeyStore(SqlHashDatabase):
    """API keys in a SQLite file (``path``) or behind a SQLAlchemy URL (``url``, e.g. PostgreSQL):
    the same rows and answers either way (``SqlHashDatabase``: pooled connections, a SQLite file
    0600 in WAL mode). verify() is one indexed lookup on a pooled connection; the API caches its
    answers. Cheap to construct. ``StoreUnavailable`` when the database cannot be reached."""

    def __init__(self, path: Path | None = None, *, url: str | None = None):
        if (path is None) == (url is None):
            raise TypeError("ApiKeyStore takes a SQLite file path or a url, not both")
        super().__init__(url if url is not None else f"sqlite:///{Path(path).absolute()}", _SCHEMA)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyStore:
        """The store the configuration names (``settings.api_keys_db_url``)."""
        return cls(url=settings.api_keys_db_url)

    # --- operations ----------------------------------------------------------------------

    def create(self, name: str, scopes: Iterable[str], rate_limit: str | None = None) -> tuple[ApiKey, str]:
        """A new key: its record and the plaintext key, which is not stored and cannot be recovered."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ApiKeyError(f"bad key name {name!r}: use 1 to {NAME_MAX_LENGTH} characters from "
                              "letters, digits, '_', '.' and '-'")
        parsed_scopes = parse_scopes(scopes)
        rate_limit = validate_rate_limit(rate_limit)

        def insert(conn: Connection) -> tuple[ApiKey, str]:
            taken = conn.execute(
                text("SELECT key_id FROM api_keys WHERE name = :name AND revoked_at IS NULL"), {"name": name}
            ).fetchone()
            if taken:
                raise ApiKeyError(f"an active key named {name!r} already exists (key id {taken[0]}); "
                                  "revoke it first or pick another name")
            while True:
                key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
                if not conn.execute(text("SELECT 1 FROM api_keys WHERE key_id = :id"), {"id": key_id}).fetchone():
                    break
            plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            record = ApiKey(key_id=key_id, name=name, scopes=parsed_scopes, rate_limit=rate_limit,
                            created_at=_now(), revoked_at=None)
            conn.execute(
                text("INSERT INTO api_keys(key_id, name, key_hash, scopes, rate_limit, created_at, revoked_at) "
                     "VALUES (:key_id, :name, :key_hash, :scopes, :rate_limit, :created_at, NULL)"),
                {"key_id": key_id, "name": name, "key_hash": hash_key(plaintext),
                 "scopes": ",".join(sorted(parsed_scopes)), "rate_limit": rate_limit,
                 "created_at": _iso(record.created_at)},
            )
            return record, plaintext

        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        try:
            return self._write(insert)
        except IntegrityError:
            # PostgreSQL's read committed lets two creates of one name pass the check above; the
            # unique index stops the second.
            raise ApiKeyError(f"an active key named {name!r} already exists; revoke it first or pick "
                              "another name") from None

    def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None (malformed, unknown, wrong secret, revoked)."""
        if not isinstance(presented, str):
            return None
        match = _KEY_RE.fullmatch(presented)
        if match is None or not self.exists():
            return None
        from sqlalchemy import text

        row = self._read(lambda conn: conn.execute(
            text(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_id = :id"), {"id": match.group(1)}
        ).fetchone())
        if row is None or not hmac.compare_digest(row[-1], hash_key(presented)):
            return None
        key = _row_to_key(row[:-1])
        return key if key.active else None

    def revoke(self, key: str) -> ApiKey:
        """Revoke by key id, or else by the name of an active key; returns the revoked record."""
        key = key.strip()
        if not self.exists():
            raise ApiKeyError(f"no API key {key!r}: there are no API keys yet")
        from sqlalchemy import text

        def mark_revoked(conn: Connection) -> tuple[ApiKey, datetime]:
            by_id = None
            if _KEY_ID_RE.fullmatch(key):
                by_id = conn.execute(text(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = :key"),
                                     {"key": key}).fetchone()
            # An active key wins over a revoked one, so a name that happens to look like a key id
            # can still be revoked once the key with that id is gone.
            row = by_id if by_id is not None and by_id[-1] is None else conn.execute(
                text(f"SELECT {_COLUMNS} FROM api_keys WHERE name = :key AND revoked_at IS NULL"), {"key": key}
            ).fetchone()
            if row is None and by_id is not None:
                gone = _row_to_key(by_id)
                raise ApiKeyError(f"API key {gone.key_id} ({gone.name}) was already revoked at "
                                  f"{gone.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
            if row is None:
                raise ApiKeyError(f"no active API key with id or name {key!r} (see `tickcast apikey list`)")
            found = _row_to_key(row)
            revoked_at = _now()
            # Only while still active: of two concurrent revokes (PostgreSQL), one revokes it.
            done = conn.execute(text("UPDATE api_keys SET revoked_at = :at WHERE key_id = :id AND revoked_at IS NULL"),
                                {"at": _iso(revoked_at), "id": found.key_id})
            if done.rowcount != 1:
                raise ApiKeyError(f"API key {found.key_id} ({found.name}) was revoked meanwhile")
            return found, revoked_at

        found, revoked_at = self._write(mark_revoked)
        return ApiKey(key_id=found.key_id, name=found.name, scopes=found.scopes, rate_limit=found.rate_limit,
                      created_at=found.created_at, revoked_at=revoked_at)

    # Last in the class: the name shadows the builtin for annotations that follow it.
    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        if not self.exists():
            return []
        from sqlalchemy import text

        rows = self._read(lambda conn: conn.execute(
            text(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")).fetchall())
        return [_row_to_key(tuple(row)) for row in rows]
