"""Client input that is parsed or turned away the same way by the routes and by
``serving.hot``: the 422s of bad input and the 429 of a used-up rate limit."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from serving.schemas import MAX_BATCH_SYMBOLS, SymbolStr
from serving.security import RateLimited

symbol_list = TypeAdapter(list[SymbolStr])


def invalid(loc: tuple, message: str) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors (one line plus the list)."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def parse_symbols(symbols: str) -> list[str]:
    """``A,B,...`` -> distinct symbols in order; a 422 (RequestValidationError) when invalid."""
    wanted = list(dict.fromkeys(s for s in (p.strip() for p in symbols.split(",")) if s))
    if not wanted:
        raise invalid(("query", "symbols"), "give at least one symbol")
    if len(wanted) > MAX_BATCH_SYMBOLS:
        raise invalid(("query", "symbols"), f"at most {MAX_BATCH_SYMBOLS:,} per request, got {len(wanted):,}")
    try:
        symbol_list.validate_python(wanted)
    except ValidationError as exc:
        bad = [wanted[e["loc"][0]] for e in exc.errors() if e["loc"]][:5]
        raise invalid(("query", "symbols"), f"not valid ticker symbols: {bad}") from None
    return wanted


def rate_limited_response(exc: RateLimited) -> JSONResponse:
    return JSONResponse(
        status_code=429, headers={"Retry-After": str(exc.retry_after)},
        content={"detail": f"rate limit of {exc.limit} reached for {exc.who}; retry in {exc.retry_after} s"},
    )
