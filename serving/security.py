"""API keys and per-key rate limits.

A key arrives in the ``X-API-Key`` header (WebSocket clients have more ways:
``serving/routes/ws.py``). Verified keys are remembered for ``api_key_cache_seconds`` so the hot
path does not hit the key store (SQLite or PostgreSQL) on every request; a revoked key stops
working within that delay. A store that cannot be reached (PostgreSQL restarting) costs a key
not in the cache a 503 that says so, never a 500; open WebSockets keep their verified keys.
Limits use the ``limits`` library's fixed windows, in memory per process or in Redis when
workers share counters: per key (``api_rate_limit`` or the key's own), per key for the
expensive routes (``api_expensive_rate_limit``), and per client address for requests without a
valid key (``api_unauthenticated_rate_limit``): guessing keys soon costs a 429 (a valid key from the
same address is still looked up and served).

A shared storage (Redis) that fails or does not answer within ``api_rate_limit_storage_timeout_seconds``
is not a reason to fail a request: the limits go on in this process's memory (each worker then
allows the whole limit), ``rate_limit_storage_unavailable`` is reported, and a thread pings the
storage every ``api_rate_limit_storage_retry_seconds`` until it answers and is used again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException, status
from fastapi.security import APIKeyHeader
from starlette.requests import Request

from tickcast.auth.apikeys import ApiKey, ApiKeyStore, StoreUnavailable

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
# With auth turned off every caller is this key, limited by the default rate.
ANONYMOUS = ApiKey(key_id="anonymous", name="anonymous", scopes=frozenset({"read", "score"}), rate_limit=None,
                   created_at=None, revoked_at=None)  # type: ignore[arg-type]


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after: int, who: str = "this API key"):
        self.limit = limit
        self.retry_after = retry_after
        self.who = who


UNAUTHENTICATED = "requests without a valid API key from this address"


class Counters:
    """Fixed windows in the configured storage, or in this process's memory while a shared one
    cannot be reached (see the module docstring)."""

    KIND = "rate_limit_storage_unavailable"

    def __init__(self, settings: Settings):
        from limits import storage
        from limits.strategies import FixedWindowRateLimiter

        self._settings = settings
        self._local = FixedWindowRateLimiter(storage.MemoryStorage())
        self._shared = None
        self._storage = None
        uri = settings.rate_limit_storage_uri
        if uri.split(":", 1)[0] != "memory":
            self._storage = storage.storage_from_string(uri, wrap_exceptions=True, **self._redis_options(uri))
            self._shared = FixedWindowRateLimiter(self._storage)
        # Set while the shared storage is down; the pinging thread clears it.
        self._down: threading.Event = threading.Event()
        self._reporter = None

    def _redis_options(self, uri: str) -> dict:
        """A bound on each connect and reply, and no retries (redis-py's default retries thrice
        with backoffs of seconds): a request waits at most the timeout once, then memory serves."""
        from limits.storage import RedisStorage

        if uri.split(":", 1)[0] not in RedisStorage.STORAGE_SCHEME:
            return {}
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        timeout = self._settings.api_rate_limit_storage_timeout_seconds
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0)}

    @property
    def shared(self) -> bool:
        """Whether the counters are the shared storage's now (False: memory, or a fallback)."""
        return self._shared is not None and not self._down.is_set()

    def hit(self, limit, identity: str) -> tuple[bool, float]:
        """(within the limit, when its window resets as epoch seconds), counting one hit."""
        from limits.errors import StorageError

        if self.shared:
            try:
                if self._shared.hit(limit, identity):
                    return True, 0.0
                return False, self._shared.get_window_stats(limit, identity).reset_time
            except StorageError as exc:
                self._fall_back(exc.storage_error)
        if self._local.hit(limit, identity):
            return True, 0.0
        return False, self._local.get_window_stats(limit, identity).reset_time

    def _fall_back(self, error: Exception) -> None:
        if self._down.is_set():
            return
        self._down.set()
        log.error("rate-limit storage %s unavailable (%s: %s): limits are counted per process until it "
                  "answers again", self._where(), error.__class__.__name__, error)
        threading.Thread(target=self._wait_for_storage, args=(f"{error.__class__.__name__}: {error}",),
                         name="rate-limit-storage", daemon=True).start()

    def _where(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self._settings.rate_limit_storage_uri)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"  # no password

    def _wait_for_storage(self, error: str) -> None:
        """Report the fallback (again each minute while it lasts), ping the storage until it
        answers, then use it again and report that."""
        retry = self._settings.api_rate_limit_storage_retry_seconds
        message = (f"the API's rate-limit storage {self._where()} cannot be reached ({error}): limits are "
                   "counted per process, so each API worker allows the whole limit")
        while True:
            self._report(True, message, {"storage": self._where(), "error": error})
            time.sleep(retry)
            if self._storage is not None and self._storage.check():
                break
        self._down.clear()
        log.info("rate-limit storage %s answers again: limits are shared again", self._where())
        self._report(False, f"the API's rate-limit storage {self._where()} is used again", {"storage": self._where()})

    def _report(self, firing: bool, message: str, details: dict) -> None:
        from tickcast.catalog.events import EventPublisher, StateReporter

        if self._reporter is None:
            self._reporter = StateReporter(EventPublisher(self._settings, "api"), "api")
        self._reporter.state(self.KIND, firing, message, severity="warning", details=details)


@dataclass
class _Cached:
    key: ApiKey | None
    until: float


class Guard:
    """Who is calling (``authenticate``), may they (``authorize``), and how often (``charge``)."""

    def __init__(self, settings: Settings):
        from limits import parse

        self.enabled = settings.api_auth_enabled
        self.store = ApiKeyStore.from_settings(settings)
        self.cache_seconds = settings.api_key_cache_seconds
        self._cache: dict[str, _Cached] = {}
        self.counters = Counters(settings)
        self._default = parse(settings.api_rate_limit)
        self._unauthenticated = parse(settings.api_unauthenticated_rate_limit)
        self._expensive = parse(settings.api_expensive_rate_limit)
        self._parsed: dict[str, object] = {}

    def authenticate(self, presented: str | None, client: str | None = None) -> ApiKey:
        """The key ``presented`` is; a 401 when it is missing or invalid. Given the ``client``
        address, a failure is also charged to that address (429 once its limit is used up);
        without it (``serving.hot``, which hands failures on to the routes) nothing is charged."""
        if not self.enabled:
            return ANONYMOUS
        try:
            return self._authenticate(presented, client)
        except HTTPException as exc:
            # A key the store could not check (503) is no guess at a key.
            if client is not None and exc.status_code == status.HTTP_401_UNAUTHORIZED:
                self._hit(self._unauthenticated, f"unauthenticated:{client}", UNAUTHENTICATED)
            raise

    def verify_now(self, presented: str) -> ApiKey | None:
        """The key as the store has it now, past the cache (open WebSockets re-check theirs);
        while the store cannot be reached, the key as last verified."""
        try:
            key = self.store.verify(presented.strip())
        except StoreUnavailable as exc:
            log.warning("API keys not re-checked: %s", exc)
            cached = self._cache.get(presented.strip())
            return cached.key if cached else None
        self._cache[presented.strip()] = _Cached(key, time.monotonic() + self.cache_seconds)
        return key

    def _authenticate(self, presented: str | None, client: str | None) -> ApiKey:
        if not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"missing API key: send it in the {API_KEY_HEADER} header (create one with "
                "`tickcast apikey create --name NAME --scopes read`)",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        presented = presented.strip()
        now = time.monotonic()
        cached = self._cache.get(presented)
        if cached is None or cached.until < now:
            cached = _Cached(self._verify(presented), now + self.cache_seconds)
            if len(self._cache) > 10_000:  # a flood of made-up keys must not grow memory
                self._cache.clear()
            self._cache[presented] = cached
        if cached.key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key",
                                headers={"WWW-Authenticate": "ApiKey"})
        return cached.key

    def _verify(self, presented: str) -> ApiKey | None:
        try:
            return self.store.verify(presented)
        except StoreUnavailable as exc:
            log.warning("API key not verified: %s", exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the API-key store cannot be reached right now, so the key cannot be verified; retry shortly",
                headers={"Retry-After": "2"},
            ) from None

    @staticmethod
    def authorize(key: ApiKey, scope: str) -> None:
        if not key.has(scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this API key ({key.name}) lacks the '{scope}' scope; it has: {', '.join(sorted(key.scopes))}",
            )

    def charge(self, key: ApiKey, client: str | None = None) -> None:
        """Count one request against the key's limit; RateLimited when it is used up."""
        from limits import parse

        limit = self._default
        if key.rate_limit:
            limit = self._parsed.get(key.rate_limit) or self._parsed.setdefault(key.rate_limit, parse(key.rate_limit))
        identity = key.key_id if key is not ANONYMOUS else f"anonymous:{client}"
        self._hit(limit, identity)

    def charge_expensive(self, key: ApiKey, client: str | None = None) -> None:
        """Count one request to an expensive route against the key's budget for those (instead of
        its budget for the cheap reads); RateLimited when it is used up."""
        identity = key.key_id if key is not ANONYMOUS else f"anonymous:{client}"
        self._hit(self._expensive, f"expensive:{identity}", "the expensive routes (history, bars, "
                  "explanations, scoring, models) with this API key")

    def _hit(self, limit, identity: str, who: str = "this API key") -> None:
        allowed, reset = self.counters.hit(limit, identity)
        if not allowed:
            raise RateLimited(str(limit), max(1, math.ceil(reset - time.time())), who)


class Authorized(APIKeyHeader):
    """The caller's key (``X-API-Key``), checked for ``required_scope`` and charged against
    its rate limit.

    The security scheme itself rather than a chain of dependencies (header, key, scope,
    limit): FastAPI resolves every level of a chain on every request, and on the hot GET
    that cost more than the route. OpenAPI documents it as the ``ApiKey`` scheme.
    """

    def __init__(self, required_scope: str, expensive: bool = False):
        super().__init__(
            name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey",
            description="An API key from `tickcast apikey create --name NAME --scopes read,score`",
        )
        self.required_scope = required_scope
        self.expensive = expensive

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        guard: Guard = request.app.state.guard
        client = request.client.host if request.client else ""
        key = guard.authenticate(request.headers.get(API_KEY_HEADER), client)
        guard.authorize(key, self.required_scope)
        if self.expensive:
            guard.charge_expensive(key, client)
        else:
            guard.charge(key, client)
        return key
