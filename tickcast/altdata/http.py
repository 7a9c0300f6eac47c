"""One bounded HTTP client for every data provider: a timeout on each request, a cap on the
bytes read, retries with backoff on 429, 5xx, timeouts and refused connections (never sooner
than the server's Retry-After), and errors that name the provider and never carry a key."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from tickcast.core.retry import RetryAfterOr, retry_after_seconds
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.altdata")

# Query parameters and headers whose values are credentials: masked in every message.
SECRET_PARAMS = frozenset({"api_key", "apikey", "token", "apiKey", "X-Api-Key", "X-Finnhub-Token"})


class ProviderError(RuntimeError):
    """A provider refused a request in a way retrying will not fix (a 4xx other than 429)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TransientProviderError(RuntimeError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class MalformedPayload(ValueError):
    """The provider answered 200 with something that is not the documented payload; the
    collector quarantines it with ``reason``."""

    def __init__(self, reason: str, raw: str):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def masked(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: ("***" if key in SECRET_PARAMS else value) for key, value in params.items()}


class ProviderClient:
    """GET JSON from one provider's base URL."""

    def __init__(self, provider: str, base_url: str, settings: Settings, headers: Mapping[str, str] | None = None,
                 sleep: Any = None):
        # httpx logs each request's full URL at INFO, and FRED's key can only travel in the URL.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.provider = provider
        self.max_bytes = settings.altdata_max_response_bytes
        self.attempts = settings.altdata_http_attempts
        self.retry_max_seconds = settings.altdata_retry_max_seconds
        self.sleep = sleep
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=dict(headers or {}),
                                   timeout=httpx.Timeout(settings.altdata_http_timeout_seconds),
                                   follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """The decoded JSON body of GET ``path``; ``MalformedPayload`` if it is not JSON."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
        from tenacity.wait import wait_random_exponential

        retrying = Retrying(
            retry=retry_if_exception_type(TransientProviderError),
            stop=stop_after_attempt(self.attempts),
            wait=RetryAfterOr(wait_random_exponential(multiplier=0.5, max=self.retry_max_seconds)),
            before_sleep=lambda state: log.warning(
                "%s %s: %s; attempt %d of %d, retrying in %.1f s", self.provider, path,
                state.outcome.exception() if state.outcome else "?", state.attempt_number, self.attempts,
                state.next_action.sleep if state.next_action else 0.0),
            reraise=True,
            **({"sleep": self.sleep} if self.sleep is not None else {}),
        )
        for attempt in retrying:
            with attempt:
                body = self._get(path, dict(params or {}))
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedPayload(f"malformed_payload:not_json ({exc.__class__.__name__})",
                                   body[:4_000].decode("utf-8", "replace")) from None

    def _get(self, path: str, params: dict[str, Any]) -> bytes:
        where = f"{self.provider} GET {path} {masked(params)}"
        try:
            with self.client.stream("GET", path, params=params) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise TransientProviderError(f"{where}: HTTP {response.status_code}",
                                                 retry_after_seconds(response.headers.get("Retry-After")))
                if response.status_code >= 400:
                    response.read()
                    raise ProviderError(f"{where}: HTTP {response.status_code}: {response.text[:300]}",
                                        response.status_code)
                if response.status_code >= 300:
                    raise ProviderError(f"{where}: HTTP {response.status_code} (redirects are not followed)")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ProviderError(f"{where}: response larger than {self.max_bytes} bytes "
                                            "(TICKCAST_ALTDATA_MAX_RESPONSE_BYTES)")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (httpx.TimeoutException, httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            raise TransientProviderError(f"{where}: {exc.__class__.__name__}") from None
