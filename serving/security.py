"""API keys and per-key rate limits.

A key arrives in the ``X-API-Key`` header (or, for WebSocket clients that cannot set
headers, the ``api_key`` query parameter). Verified keys are remembered for
``api_key_cache_seconds`` so the hot path does not hit SQLite on every request; a revoked
key stops working within that delay. Limits use the ``limits`` library's fixed windows,
in memory per process or in Redis when workers share counters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException, status
from fastapi.security import APIKeyHeader
from starlette.requests import Request

from tickcast.auth.apikeys import ApiKey, ApiKeyStore

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

API_KEY_HEADER = "X-API-Key"
# With auth turned off every caller is this key, limited by the default rate.
ANONYMOUS = ApiKey(key_id="anonymous", name="anonymous", scopes=frozenset({"read", "score"}), rate_limit=None,
                   created_at=None, revoked_at=None)  # type: ignore[arg-type]


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after: int):
        self.limit = limit
        self.retry_after = retry_after


@dataclass
class _Cached:
    key: ApiKey | None
    until: float


class Guard:
    """Who is calling (``authenticate``), may they (``authorize``), and how often (``charge``)."""

    def __init__(self, settings: Settings):
        from limits import parse, storage

        self.enabled = settings.api_auth_enabled
        self.store = ApiKeyStore(settings.api_keys_path)
        self.cache_seconds = settings.api_key_cache_seconds
        self._cache: dict[str, _Cached] = {}
        self._storage = storage.storage_from_string(settings.api_rate_limit_storage)
        from limits.strategies import FixedWindowRateLimiter

        self._limiter = FixedWindowRateLimiter(self._storage)
        self._default = parse(settings.api_rate_limit)
        self._parsed: dict[str, object] = {}

    def authenticate(self, presented: str | None) -> ApiKey:
        if not self.enabled:
            return ANONYMOUS
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
            cached = _Cached(self.store.verify(presented), now + self.cache_seconds)
            if len(self._cache) > 10_000:  # a flood of made-up keys must not grow memory
                self._cache.clear()
            self._cache[presented] = cached
        if cached.key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key",
                                headers={"WWW-Authenticate": "ApiKey"})
        return cached.key

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
        if not self._limiter.hit(limit, identity):
            reset = self._limiter.get_window_stats(limit, identity).reset_time
            raise RateLimited(str(limit), max(1, math.ceil(reset - time.time())))


class Authorized(APIKeyHeader):
    """The caller's key (``X-API-Key``), checked for ``required_scope`` and charged against
    its rate limit.

    The security scheme itself rather than a chain of dependencies (header, key, scope,
    limit): FastAPI resolves every level of a chain on every request, and on the hot GET
    that cost more than the route. OpenAPI documents it as the ``ApiKey`` scheme.
    """

    def __init__(self, required_scope: str):
        super().__init__(
            name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey",
            description="An API key from `tickcast apikey create --name NAME --scopes read,score`",
        )
        self.required_scope = required_scope

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        guard: Guard = request.app.state.guard
        key = guard.authenticate(request.headers.get(API_KEY_HEADER))
        guard.authorize(key, self.required_scope)
        guard.charge(key, request.client.host if request.client else None)
        return key
