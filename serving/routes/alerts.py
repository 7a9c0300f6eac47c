"""Alert rules (create, read, replace, delete: the `admin` scope) and the alert history (`read`),
over the same store the engine and `tickcast alerts` use."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Security
from starlette.requests import HTTPConnection

from serving.deps import ReadKey
from serving.routes import NOT_FOUND, v1_router
from serving.schemas import (
    AlertDeliveryOut,
    AlertHistoryResponse,
    AlertOut,
    AlertRuleOut,
    AlertRulesResponse,
    ErrorResponse,
)
from serving.security import Authorized
from tickcast.alerts.rules import RuleSpec, mask_address
from tickcast.alerts.store import AlertStore, StoredRule
from tickcast.auth.apikeys import ApiKey

router = v1_router("alerts")

AdminKey = Annotated[ApiKey, Security(Authorized("admin"))]
CONFLICT: dict[int | str, dict] = {409: {"model": ErrorResponse, "description": "A rule with that name exists"}}
RulePath = Annotated[str, Path(description="The rule's name or id", max_length=100, examples=["buy-s0001"])]


_OPENING = threading.Lock()


def get_alert_store(connection: HTTPConnection) -> AlertStore:
    """One store per app, opened (and migrated) at its first use: an API that never serves an
    alert route never touches the alert database."""
    state = connection.app.state
    with _OPENING:
        if getattr(state, "alert_store", None) is None:
            state.alert_store = AlertStore(state.settings.alerts_db_url)
    return state.alert_store


AlertStoreDep = Annotated[AlertStore, Depends(get_alert_store)]


def _out(rule: StoredRule) -> AlertRuleOut:
    return AlertRuleOut.model_validate({**rule.spec.model_dump(), "id": rule.id, "created_at": rule.created_at,
                                        "updated_at": rule.updated_at})


@router.get("/alerts/rules", response_model=AlertRulesResponse, summary="Every alert rule")
def list_rules(store: AlertStoreDep, _key: AdminKey) -> AlertRulesResponse:
    rules = [_out(r) for r in store.rules()]
    return AlertRulesResponse(count=len(rules), rules=rules)


@router.post("/alerts/rules", response_model=AlertRuleOut, status_code=201, summary="Add an alert rule",
             responses=CONFLICT)
def add_rule(spec: RuleSpec, store: AlertStoreDep, _key: AdminKey) -> AlertRuleOut:
    return _out(store.add_rule(spec))


@router.get("/alerts/rules/{rule}", response_model=AlertRuleOut, summary="One alert rule", responses=NOT_FOUND)
def get_rule(rule: RulePath, store: AlertStoreDep, _key: AdminKey) -> AlertRuleOut:
    return _out(store.rule(rule))


@router.put("/alerts/rules/{rule}", response_model=AlertRuleOut, summary="Replace an alert rule",
            description="The rule's whole new definition (enable or disable it with `enabled`). Its state per "
            "subject starts over.", responses={**NOT_FOUND, **CONFLICT})
def replace_rule(rule: RulePath, spec: RuleSpec, store: AlertStoreDep, _key: AdminKey) -> AlertRuleOut:
    return _out(store.replace_rule(rule, spec))


@router.delete("/alerts/rules/{rule}", response_model=AlertRuleOut, summary="Delete an alert rule",
               description="Its alerts stay in the history.", responses=NOT_FOUND)
def delete_rule(rule: RulePath, store: AlertStoreDep, _key: AdminKey) -> AlertRuleOut:
    return _out(store.delete_rule(rule))


@router.get("/alerts/history", response_model=AlertHistoryResponse, summary="Alerts made, newest first")
def history(
    store: AlertStoreDep, _key: ReadKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    rule: Annotated[str | None, Query(max_length=100, description="Only this rule's (by name)")] = None,
    subject: Annotated[str | None, Query(max_length=100, description="Only this symbol's or pipeline subject's")] = None,
) -> AlertHistoryResponse:
    alerts = [_alert_out(a) for a in store.history(limit=limit, rule=rule, subject=subject)]
    return AlertHistoryResponse(count=len(alerts), alerts=alerts)


def _alert_out(alert: dict[str, Any]) -> AlertOut:
    deliveries = [AlertDeliveryOut(recipient=mask_address(d["address"]), **{k: v for k, v in d.items() if k != "address"})
                  for d in alert["deliveries"]]
    return AlertOut(deliveries=deliveries, **{k: v for k, v in alert.items() if k not in ("deliveries", "observed_at")})
