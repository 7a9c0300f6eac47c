"""Every error as a client gets it: a 4xx with ``{"detail": ...}`` (a 422 also with the list of
problems), a 503 when a store cannot be read, and for anything unexpected a 500 with an id
to find the traceback in the log, never the traceback itself.

The services raise ``tickcast.core.errors``; this is where they become statuses and where
the API adds its own hints (the route that lists what exists).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.inputs import invalid, rate_limited_response
from serving.schemas import ValidationErrorResponse
from serving.security import RateLimited
from tickcast.core.errors import Conflict, InvalidInput, ModelNotFound, NotFound, Unavailable, UnknownSymbol

log = logging.getLogger("tickcast.serving")

# When a client may ask again after a 503: a store that is away (locked by another process, a
# registry or Redis restarting) is usually back within seconds, and a client that retries at
# once only adds to the load.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


@contextmanager
def located(source: str) -> Iterator[None]:
    """A service's InvalidInput as a 422 that points into the request: ``source`` is
    ``body`` or ``query``, as in FastAPI's own validation errors."""
    try:
        yield
    except InvalidInput as exc:
        raise invalid((source, *exc.field), exc.message) from None


def not_found_detail(exc: NotFound) -> str:
    if isinstance(exc, UnknownSymbol):
        if exc.suggestion is not None:
            return f"{exc.message}; symbols are case-sensitive, did you mean '{exc.suggestion}'?"
        return f"{exc.message}; GET /api/v1/symbols lists the known symbols"
    if isinstance(exc, ModelNotFound):
        return f"{exc.message}; GET /api/v1/models lists them"
    return exc.message


def _validation_body(errors: list[dict]) -> dict:
    issues = [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
            "msg": e.get("msg", "invalid"),
            "type": e.get("type", "value_error"),
        }
        for e in errors
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in issues) or "invalid request"
    return ValidationErrorResponse.model_validate({"detail": detail, "errors": issues}).model_dump()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default body echoes the input back and has no summary line; a client
        # gets one sentence it can show, plus the structured list.
        return JSONResponse(status_code=422, content=_validation_body(list(exc.errors())))

    @app.exception_handler(InvalidInput)
    async def invalid_input(_request: Request, exc: InvalidInput) -> JSONResponse:
        # Reached only when a route did not say where the input was (``located``).
        return JSONResponse(status_code=422, content=_validation_body(
            [{"loc": exc.field, "msg": exc.message, "type": "value_error"}]))

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": not_found_detail(exc)})

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": exc.message})

    @app.exception_handler(Unavailable)
    async def unavailable(_request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": exc.message},
                            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})

    @app.exception_handler(RateLimited)
    async def rate_limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return rate_limited_response(exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc
        )
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error (id {error_id}); the server log has the details"},
        )
