"""The API's routes, one module per resource, each an ``APIRouter`` that ``serving.app`` includes.

The ``/api/v1`` prefix is each router's own, not given at inclusion: request metrics label a
request with its route's path, and that path includes only the router's own prefix.
"""

from __future__ import annotations

from fastapi import APIRouter

from serving.schemas import ErrorResponse, ValidationErrorResponse

API_PREFIX = "/api/v1"

# Every /api/v1 route needs a key and takes input, so every one may answer these.
KEYED_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "Missing, invalid or revoked API key"},
    403: {"model": ErrorResponse, "description": "The key lacks the route's scope"},
    422: {"model": ValidationErrorResponse, "description": "Invalid input"},
    429: {"model": ErrorResponse, "description": "Rate limit reached; see Retry-After"},
}
NOT_FOUND: dict[int | str, dict] = {
    404: {"model": ErrorResponse, "description": "Unknown symbol or nothing to show yet"},
}


def v1_router(tag: str) -> APIRouter:
    return APIRouter(prefix=API_PREFIX, tags=[tag], responses=KEYED_RESPONSES)
