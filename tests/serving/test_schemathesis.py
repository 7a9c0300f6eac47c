"""Property-based requests generated from the OpenAPI schema (schemathesis): no input makes
a 5xx, and every response matches its documented schema; valid and invalid inputs.

Schemathesis' pytest plugin does not run under pytest 9 (it reads a removed private
attribute), so each operation's strategy is driven by Hypothesis here directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from serving.app import create_app
from tests.serving.market_data import Scored

EXAMPLES_PER_OPERATION = 40


def _explore(operation, headers: dict[str, str], count, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        count()
        case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

    check()


@pytest.mark.slow  # hundreds of generated requests; the routes' own tests cover each error in the fast tier
def test_no_generated_request_gets_a_server_error(scored: Scored) -> None:
    # Hundreds of expensive requests from one key: their own budget would answer most with 429.
    app = create_app(scored.settings.model_copy(update={"api_expensive_rate_limit": "100000/second"}))
    headers = {"X-API-Key": scored.keys["scorer"]}
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    # Each call runs the app's lifespan, which loads the live predictions.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        # Valid inputs, then invalid ones (wrong types, out-of-range values, missing fields).
        for mode in GenerationMode:
            label = f"{operation.label} ({mode.value})"
            try:
                _explore(operation, headers, lambda label=label: calls.__setitem__(label, calls.get(label, 0) + 1),
                         mode)
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                # No parameters and no body (/metrics, /healthz): there is no invalid input to send.
            except Exception as exc:  # noqa: BLE001 - collected, so one report names every failing route
                failures[label] = str(exc)[:2000]
    print("schemathesis calls per operation:", calls)
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert len(calls) >= len(operations)  # operations without parameters have no invalid input
    assert sum(calls.values()) >= 300


@pytest.mark.parametrize("path", ["/api/v1/predictions/{symbol}", "/api/v1/models"])
def test_documented_security_scheme(scored: Scored, path: str) -> None:
    with TestClient(create_app(scored.settings)) as client:
        spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "An API key from `tickcast apikey create --name NAME --scopes read,score`"}
    assert spec["paths"][path]["get"]["security"] == [{"ApiKey": []}]
