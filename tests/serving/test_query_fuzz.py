"""Hypothesis over the query and path parameters of every GET route, read from the app's own
OpenAPI document: random strings (control characters included), huge and negative integers, floats,
and times of every zone including the extremes of Python's datetime (the OverflowError of year 1
at +14:00). No combination may make a 5xx. This complements test_schemathesis.py, whose values
follow each parameter's schema; these ignore it on purpose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.app import create_app
from tests.serving.market_data import Scored

EXAMPLES_PER_ROUTE = 60

ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)),
                         timezone(timedelta(hours=5, minutes=30))])
EXTREME_VALUES = [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "9999-12-31T23:59:59.999999Z",
    "0000-00-00", "10000-01-01", "2024-02-30", "1e308", "-1", "0", "NaN", "inf", "-inf", "", " ", "%00", "\x00",
    "true", "null", "[]", "{}", str(2**63), str(-(2**63) - 1), "1" * 400, "AAPL," * 2000,
    "0001-01-01T13:59:59.999999+14:00", "9999-12-31T10:00:01-14:00", "0001-01-01T00:00:00-00:00",
]
EXTREMES = st.sampled_from(EXTREME_VALUES)
VALUES = st.one_of(
    EXTREMES,
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=ZONES)
    .map(datetime.isoformat),
    st.dates().map(str),
)


def _get_routes(client: TestClient) -> list[tuple[str, list[str], list[str]]]:
    """(path template, path parameter names, query parameter names) of every GET route."""
    routes = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if "get" not in operations:
            continue
        parameters = operations["get"].get("parameters", [])
        routes.append((path, [p["name"] for p in parameters if p["in"] == "path"],
                       [p["name"] for p in parameters if p["in"] == "query"]))
    return routes


def _requests(path_names: list[str], query_names: list[str]) -> st.SearchStrategy:
    symbols = st.one_of(st.sampled_from(["AAPL", "MSFT", "XYZ", "BRK.B", "^GSPC"]), st.text(min_size=1, max_size=20))
    return st.tuples(
        st.fixed_dictionaries({name: symbols for name in path_names}),
        st.fixed_dictionaries({}, optional={name: VALUES for name in query_names}),
    )


def _explore(client: TestClient, template: str, path_names: list[str], query_names: list[str],
             failures: list[str], counts: dict[str, int]) -> None:
    @given(request=_requests(path_names, query_names))
    @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(request) -> None:
        path_values, query = request
        path = template
        for name, value in path_values.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))  # the server decodes it, NULs and all
        response = client.get(path, params=query)
        counts[template] = counts.get(template, 0) + 1
        if response.status_code >= 500:
            failures.append(f"GET {path} {query!r} -> {response.status_code} {response.text[:300]}")
        assert response.status_code < 500

    # Each extreme value in each query parameter alone, every time; then Hypothesis' combinations.
    symbol = {name: "AAPL" for name in path_names}
    for name in query_names:
        for value in EXTREME_VALUES:
            path = template.format(**symbol)
            response = client.get(path, params={name: value})
            counts[template] = counts.get(template, 0) + 1
            if response.status_code >= 500:
                failures.append(f"GET {path} {name}={value!r} -> {response.status_code} {response.text[:300]}")
    try:
        check()
    except AssertionError:
        pass  # collected in failures, so that one report names every failing route


@pytest.mark.slow  # a few hundred requests over every GET route
def test_no_query_makes_a_server_error(scored: Scored) -> None:
    # Limits far above the generated load: a 429 would hide the route behind it.
    app_settings = scored.settings.model_copy(update={"api_expensive_rate_limit": "100000/second",
                                                      "api_unauthenticated_rate_limit": "100000/second"})
    failures: list[str] = []
    counts: dict[str, int] = {}
    with TestClient(create_app(app_settings), headers={"X-API-Key": scored.keys["scorer"]}) as client:
        routes = _get_routes(client)
        assert len(routes) >= 10
        for template, path_names, query_names in routes:
            _explore(client, template, path_names, query_names, failures, counts)
    print("generated requests per route:", counts)
    assert not failures, "\n".join(failures[:20])
    # Every route with parameters was explored (one without has one request to make).
    assert all(counts.get(template, 0) >= EXAMPLES_PER_ROUTE // 2 for template, p, q in routes if p or q), counts
