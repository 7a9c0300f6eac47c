"""The two reads trading systems make in their own hot path, answered as plain ASGI.

``GET /api/v1/predictions/{symbol}`` and ``GET /api/v1/predictions?symbols=...`` are FastAPI
routes like the others: they are documented in OpenAPI and answer every case. This
middleware answers the common case of each before FastAPI sees it - a valid key with the
``read`` scope, a well-formed request, a symbol with a prediction - with the very bytes the
route would send (``LatestPredictions.latest_body`` / ``batch_body``), and hands everything else
(a missing key, a 404, a 422, ``include_features``) to the route, which gives the error.

Why: FastAPI's request handling (routing, dependency resolution, parameter parsing) costs
about 60 us per request on this project's machines before our code runs, and the route's
dependencies as much again; answered here, a GET costs a few microseconds of Python
(``bench/api.py`` has the figures). Keys are checked and rate limits charged by the same
``Guard`` as the routes, and request metrics are labelled with the route's template.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.inputs import parse_symbols, rate_limited_response
from serving.security import API_KEY_HEADER, Guard, RateLimited
from tickcast.core.symbols import SYMBOL_PATTERN

if TYPE_CHECKING:
    from serving.latest import LatestPredictions

_SYMBOL = re.compile(SYMBOL_PATTERN)
_HEADER = API_KEY_HEADER.lower().encode()
_JSON_HEADERS = (b"content-type", b"application/json")


class HotReads:
    def __init__(self, app: ASGIApp, latest: LatestPredictions, guard: Guard, prefix: str,
                 routes: dict[str, object]):
        self.app = app
        self.latest = latest
        self.guard = guard
        self.one_prefix = f"{prefix}/predictions/"
        self.many_path = f"{prefix}/predictions"
        # Request metrics label a request with its route's template, found in the scope.
        self.one_route = routes[f"{prefix}/predictions/{{symbol}}"]
        self.many_route = routes[f"{prefix}/predictions"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body, route = self._answer(scope)
            if body is not None:
                scope["route"] = route
                if isinstance(body, RateLimited):
                    await rate_limited_response(body)(scope, receive, send)
                    return
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % len(body)), _JSON_HEADERS]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[bytes | RateLimited | None, object]:
        """The response body, or RateLimited, or None to let the route answer."""
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if path.startswith(self.one_prefix):
            symbol = path[len(self.one_prefix):]
            if query or not _SYMBOL.match(symbol):
                return None, None
            if not self.latest.has(symbol):  # the route says why (unknown, not scored yet)
                return None, None
            limited = self._admit(scope)
            if limited is not False:
                return limited, self.one_route
            return self.latest.latest_body(symbol), self.one_route
        if path == self.many_path and query.startswith(b"symbols="):
            params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if len(params) != 1:
                return None, None
            try:
                wanted = parse_symbols(params[0][1])
            except RequestValidationError:
                return None, None
            limited = self._admit(scope)
            if limited is not False:
                return limited, self.many_route
            return self.latest.batch_body(wanted), self.many_route
        return None, None

    def _admit(self, scope: Scope) -> RateLimited | None | bool:
        """False when the caller may read now; RateLimited when its limit is used up; None
        when the route should answer (no key, a bad key, no read scope)."""
        presented = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER), None)
        try:
            key = self.guard.authenticate(presented)
            self.guard.authorize(key, "read")
        except HTTPException:
            return None
        client = scope.get("client")
        try:
            self.guard.charge(key, client[0] if client else None)
        except RateLimited as exc:
            return exc
        return False
