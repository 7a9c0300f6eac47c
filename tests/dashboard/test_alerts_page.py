"""The alerts page: the form <-> RuleSpec conversion (and its messages for what is not a rule), the
rules and history tables against a real alert store (SQLite, the Alembic migrations), and in
headless Chromium a rule created, disabled and deleted through the page, checked in the engine's
store, and planted history shown with its recipients masked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboard.pages import PAGES, alerts
from dashboard.pages.alerts import (
    RuleFormError,
    blank_form,
    form_to_spec,
    history_rows,
    history_table,
    rule_rows,
    rules_table,
    spec_to_form,
)
from tests.dashboard.conftest import WAIT, Dashboard, add_analyst, screenshot, serve_dashboard, sign_in
from tickcast.alerts.incidents import AlertDecision
from tickcast.alerts.rules import RuleSpec, mask_address
from tickcast.alerts.store import AlertStore, NewAlert
from tickcast.core.settings import Settings

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PHONE = "+15559876543"
EMAIL = "oncall@example.com"
HOOK = "https://hooks.example.com/tickcast"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def signal_spec(**fields: Any) -> RuleSpec:
    return RuleSpec.model_validate({
        "name": "confident-buys", "on_signal": {"signal": "BUY", "previous_signal": "HOLD", "min_confidence": 0.6,
                                               "min_abs_return": 0.015, "band_contains": 101.25},
        "symbols": ["AAPL", "MSFT"], "recipients": [{"channel": "sms", "address": PHONE},
                                                    {"channel": "email", "address": EMAIL}],
        "throttle_seconds": 120, "quiet_hours": {"start": "22:00", "end": "07:30", "timezone": "America/New_York"},
        "severity": "critical", **fields})


def pipeline_spec(**fields: Any) -> RuleSpec:
    return RuleSpec.model_validate({
        "name": "ingest-down", "on_pipeline": {"kinds": ["kafka_lag", "ingest_stopped"], "min_severity": "critical"},
        "recipients": [{"channel": "webhook", "address": HOOK}], "notify_resolved": True, "enabled": False,
        **fields})


def text_of(component: Any) -> str:
    """Every string under a Dash component, space-separated (what a reader sees, roughly)."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list):
        return " ".join(text_of(c) for c in component)
    return text_of(getattr(component, "children", None))


def find(component: Any, predicate) -> list[Any]:
    found = []
    if component is None or isinstance(component, str | int | float):
        return found
    if isinstance(component, list):
        for child in component:
            found += find(child, predicate)
        return found
    if predicate(component):
        found.append(component)
    return found + find(getattr(component, "children", None), predicate)


def by_id(component: Any, wanted: Any) -> Any:
    [found] = find(component, lambda c: getattr(c, "id", None) == wanted)
    return found


def errors_of(form: dict[str, Any]) -> list[str]:
    with pytest.raises(RuleFormError) as caught:
        form_to_spec(form)
    return caught.value.messages


# -- form <-> RuleSpec ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [signal_spec(), pipeline_spec(), signal_spec(symbols=[], watchlist="tech",
                                                                             quiet_hours=None, enabled=False),
                                  signal_spec(on_signal={"min_confidence": 0.07}, symbols=[],
                                              notify_resolved=True, throttle_seconds=0)])
def test_a_rule_shown_in_the_form_and_saved_again_is_the_same_rule(spec: RuleSpec) -> None:
    assert form_to_spec(spec_to_form(spec)) == spec


def test_the_form_shows_the_rule_in_its_own_units() -> None:
    form = spec_to_form(signal_spec())
    assert form["min_confidence_pct"] == 60 and form["min_abs_return_pct"] == 1.5  # percentages, not 0.6000001
    assert form["recipients"] == f"sms {PHONE}\nemail {EMAIL}"
    assert (form["quiet_start"], form["quiet_end"], form["quiet_timezone"]) == ("22:00", "07:30", "America/New_York")
    assert form["options"] == ["enabled"] and form["kind"] == "signal" and form["symbols"] == "AAPL, MSFT"
    assert spec_to_form(pipeline_spec())["options"] == ["notify_resolved"]


def test_a_filled_form_makes_the_rule_it_says() -> None:
    form = {**blank_form(), "name": " confident-buys ", "signal": "BUY", "min_confidence_pct": 60,
            "min_abs_return_pct": "1.5", "symbols": "msft, aapl msft", "throttle_seconds": 120.0,
            # The channel may be left out when the address says it.
            "recipients": f"\nsms {PHONE}\n  {EMAIL}\nwebhook: {HOOK}\n"}
    spec = form_to_spec(form)
    assert spec == RuleSpec.model_validate({
        "name": "confident-buys", "on_signal": {"signal": "BUY", "min_confidence": 0.6, "min_abs_return": 0.015},
        "symbols": ["AAPL", "MSFT"], "throttle_seconds": 120,
        "recipients": [{"channel": "sms", "address": PHONE}, {"channel": "email", "address": EMAIL},
                       {"channel": "webhook", "address": HOOK}]})
    # The other kind's fields are not part of the rule.
    pipeline = form_to_spec({**form, "kind": "pipeline", "kinds": ["drift"]})
    assert pipeline.on_signal is None and pipeline.symbols == [] and pipeline.on_pipeline.kinds == ["drift"]


def test_an_empty_form_says_what_is_missing() -> None:
    messages = errors_of(blank_form())
    assert "Name: give the rule a name" in messages
    assert any(m.startswith("Recipients: add at least one") for m in messages)
    assert any(m.startswith("Signal conditions: a signal rule needs at least one condition") for m in messages)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "bad/name"}, "Name: letters, digits, spaces, '_', '.' and '-' only"),
    ({"name": "42"}, "Name: a rule's name is not a number"),
    ({"recipients": f"email {EMAIL}\nsms 555-1234"}, "Recipient on line 2: '555-1234' is not a phone number"),
    ({"recipients": "pager 12345"}, "Recipient on line 1: write one recipient per line as 'channel address'"),
    ({"recipients": "someone"}, "Recipient on line 1: start the line with its channel"),
    ({"min_confidence_pct": 150}, "Minimum confidence: a percentage from 0 to 100"),
    ({"min_abs_return_pct": "lots"}, "Minimum |predicted return|: 'lots' is not a number"),
    ({"min_abs_return_pct": -1}, "Minimum |predicted return|: Input should be greater than or equal to 0"),
    ({"band_contains": 0}, "Price inside the p10–p90 band: Input should be greater than 0"),
    ({"previous_signal": "HOLD", "signal": "any"}, "Signal conditions: previous_signal needs signal"),
    ({"symbols": "AAPL", "watchlist": "tech"}, "Give symbols or a watchlist, not both"),
    ({"symbols": "AAPL, $$$"}, "Symbols: not a symbol: $$$"),
    ({"throttle_seconds": 1.5}, "Throttle: a whole number"),
    ({"throttle_seconds": 8 * 86400}, "Throttle: Input should be less than or equal to 604800"),
    ({"quiet_start": "22:00"}, "Quiet hours: give both a start and an end (HH:MM), or neither"),
    ({"quiet_start": "25:00", "quiet_end": "07:00"}, "Quiet hours start: Input should be in a valid time format"),
    ({"quiet_start": "22:00", "quiet_end": "07:00", "quiet_timezone": "Mars/Base"},
     "Quiet hours time zone: unknown time zone 'Mars/Base'"),
    ({"kind": "pipeline"}, "Event kinds: pick at least one"),
    ({"kind": None}, "Triggered by: pick a prediction signal or a pipeline event"),
])
def test_what_is_not_a_rule_gets_a_message_in_the_forms_words(fields: dict[str, Any], expected: str) -> None:
    form = {**blank_form(), "name": "ok", "signal": "BUY", "recipients": f"email {EMAIL}", **fields}
    messages = errors_of(form)
    assert any(m.startswith(expected) for m in messages), messages
    assert not any("Traceback" in m or "errors.pydantic.dev" in m or "Value error" in m for m in messages)


# -- the tables ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.sqlite'}", clock=Clock(T0))
    yield store
    store.close()


def test_the_rules_table_shows_each_rule_with_masked_recipients_and_its_buttons(store: AlertStore) -> None:
    store.add_rule(signal_spec())
    store.add_rule(pipeline_spec())
    table = rules_table(rule_rows(store.rules()), frozenset({"sms"}))
    first, second = find(table, lambda c: str(getattr(c, "id", "")).startswith("alert-rule-"))
    assert text_of(first).split(" Disable")[0] == (
        "confident-buys signal HOLD → BUY, confidence ≥ 60%, |predicted return| ≥ 1.5%, price 101.25 inside "
        f"the p10–p90 band AAPL, MSFT sms {mask_address(PHONE)} (dry run) email {mask_address(EMAIL)} "
        "throttle 120 s · quiet 22:00–07:30 America/New_York critical on")
    assert text_of(second).startswith(
        "ingest-down pipeline event ingest_stopped, kafka_lag at critical or above the pipeline "
        f"webhook {mask_address(HOOK)} throttle 300 s · also when resolved warning off Enable")
    assert PHONE not in text_of(table) and EMAIL not in text_of(table)
    # Each button says what it does to which rule (the toggle: the state it sets).
    assert by_id(first, {"type": "alert-toggle", "rule": 1, "to": "off"}).children == "Disable"
    assert by_id(second, {"type": "alert-toggle", "rule": 2, "to": "on"}).children == "Enable"
    assert by_id(second, {"type": "alert-edit", "rule": 2}).children == "Edit"
    assert by_id(second, {"type": "alert-delete", "rule": 2}).children == "Delete"


def test_no_rules_says_so() -> None:
    assert text_of(rules_table([])) == "No alert rules yet: create one with the form."


def plant_history(store: AlertStore, clock: Clock) -> list[str]:
    """Alerts as the engine makes them, through the store's own methods: a signal alert sent by
    sms and dead by e-mail (with the provider's error), then a throttled one (no delivery), then
    a pipeline alert still pending on its webhook."""
    buys = store.add_rule(signal_spec(quiet_hours=None))
    pipeline = store.add_rule(pipeline_spec())
    made = []
    for rule, subject, status in ((buys, "AAPL", "queued"), (buys, "MSFT", "throttled"),
                                  (pipeline, "ingest_stopped:ingest:ticks", "queued")):
        with store.session() as session:
            made += store.add_alerts(session, [NewAlert(rule, subject, AlertDecision("firing", status, clock.now,
                                                                                     clock.now, None),
                                                        f"{rule.name} {subject}", {"symbol": subject})])
        if subject == "AAPL":
            sms, email = sorted(store.due_deliveries(clock.now, limit=10), key=lambda d: d["channel"], reverse=True)
            store.mark_delivery(sms["id"], "sent", provider_id="SM1", attempt=True)
            store.mark_delivery(email["id"], "dead", error="550 mailbox unavailable", attempt=True)
        clock.now += timedelta(minutes=5)
    return made


def test_history_rows_are_the_stores_deliveries_newest_first_with_masked_recipients(store: AlertStore) -> None:
    plant_history(store, store.clock)
    rows = history_rows(store.history())
    assert [(r["when"], r["rule"], r["subject"], r["channel"], r["recipient"], r["status"], r["attempts"], r["error"])
            for r in rows] == [
        ("2026-03-02 15:10:00 UTC", "ingest-down", "ingest_stopped:ingest:ticks", "webhook", mask_address(HOOK),
         "pending", "0", ""),
        ("2026-03-02 15:05:00 UTC", "confident-buys", "MSFT", "–", "–", "throttled", "–", ""),
        ("2026-03-02 15:00:00 UTC", "confident-buys", "AAPL", "email", mask_address(EMAIL), "dead", "1",
         "550 mailbox unavailable"),
        ("2026-03-02 15:00:00 UTC", "confident-buys", "AAPL", "sms", mask_address(PHONE), "sent", "1", ""),
    ]
    table = history_table(rows)
    assert PHONE not in text_of(table) and EMAIL not in text_of(table) and HOOK not in text_of(table)
    assert len(find(table, lambda c: type(c).__name__ == "Tr")) == 1 + len(rows)


def test_history_marks_dry_runs_and_cuts_long_errors() -> None:
    alert = {"created_at": T0, "rule": "r", "subject": "AAPL", "phase": "firing", "status": "partial",
             "deliveries": [{"channel": "sms", "address": PHONE, "status": "sent", "attempts": 1, "dry_run": True,
                             "last_error": None},
                            {"channel": "email", "address": EMAIL, "status": "dead", "attempts": 6, "dry_run": False,
                             "last_error": "x" * 500}]}
    sms, email = history_rows([alert])
    assert sms["status"] == "sent (dry run)" and email["status"] == "dead"
    assert len(email["error"]) == alerts.ERROR_CHARS and email["error"].endswith("…")


def test_no_history_says_so() -> None:
    assert text_of(history_table([])) == "No alerts yet."
    assert text_of(history_table([], "ingest-down")) == "No alerts for rule 'ingest-down' yet."


def test_the_service_reads_the_engines_store_of_these_settings_and_opens_it_only_when_used(
        settings: Settings) -> None:
    service = alerts.AlertService(settings)
    assert not (settings.home_dir / "alerts").exists()
    assert service.rules_view() == {"rules": [], "watchlists": [], "dry_run": ["email", "sms"]}
    engine = AlertStore(settings.alerts_db_url)  # what the engine and the API open with these settings
    engine.add_rule(pipeline_spec())
    engine.set_watchlist("tech", ["aapl"])
    view = service.rules_view()
    assert [RuleSpec.model_validate(r["spec"]) for r in view["rules"]] == [pipeline_spec()]
    assert view["watchlists"] == ["tech"]
    engine.add_rule(signal_spec(symbols=[], watchlist="energy"))  # a watchlist the engine lacks stays a choice
    assert service.rules_view()["watchlists"] == ["energy", "tech"]
    assert service.history("ingest-down") == []
    engine.close()


def test_the_page_is_listed_and_its_url_restores_the_history_filter(settings: Settings) -> None:
    assert alerts in PAGES and alerts.PATH == "/alerts" and alerts.NAME == "Alerts"
    data = type("Data", (), {"settings": settings})()
    page = alerts.layout(data, rule="ingest-down")
    assert by_id(page, "alerts-history-rule").value == "ingest-down"
    assert by_id(page, "alerts-refresh").interval == max(settings.dashboard_refresh_seconds,
                                                         alerts.MIN_REFRESH_SECONDS) * 1000
    # Every field of the form is on the page, showing a new rule.
    form = blank_form()
    for key, component in alerts.FORM.items():
        assert by_id(page, component).value == form[key]


# -- in the browser ------------------------------------------------------------------------------


@pytest.fixture
def alerts_dashboard(settings: Settings, tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard over a fresh home (this page needs no market data): the engine's store is the
    default SQLite file under that home, for the server and for this test alike."""
    settings = settings.model_copy(update={"alerts_database_url": None})
    assert settings.alerts_db_url == f"sqlite:///{settings.home_dir / 'alerts' / 'alerts.sqlite'}"
    add_analyst(settings)
    yield from serve_dashboard(settings, tmp_path, TICKCAST_ALERTS_DATABASE_URL=settings.alerts_db_url)


def _wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(condition)
    except Exception as exc:
        raise AssertionError(message) from exc


def _text(driver, element_id: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.ID, element_id)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def _type(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    element = driver.find_element(By.ID, element_id)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def _choose(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    # The option's input may be hidden; its label is what a person clicks.
    driver.find_element(By.CSS_SELECTOR, f"#{element_id} label:has(input[value='{value}'])").click()


def _click_in_row(driver, rule: str, css: str) -> None:
    from selenium.webdriver.common.by import By

    def clicked(d) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, f"tr[data-rule='{rule}'] {css}").click()
            return True
        except Exception:  # noqa: BLE001 - the table was redrawn under the pointer: try again
            return False

    _wait(driver, clicked, f"no {css} in the row of {rule}")


def _history_cells(driver) -> list[list[str]]:
    return driver.execute_script("""
        const table = document.getElementById('alerts-history-table');
        if (!table) { return []; }
        return [...table.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim()));
    """)


def _expected_cells(rows: list[dict[str, str]]) -> list[list[str]]:
    return [[row[key] for key, _ in alerts.HISTORY_COLUMNS] for row in rows]


@pytest.mark.browser
@pytest.mark.slow
def test_rules_made_on_the_page_are_the_engines_and_its_history_shows_masked(
        browser, alerts_dashboard: Dashboard) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    settings = alerts_dashboard.settings
    planting = AlertStore(settings.alerts_db_url, clock=Clock(T0))
    plant_history(planting, planting.clock)
    expected_history = history_rows(planting.history())
    planting.close()

    sign_in(browser, alerts_dashboard.url, next_path="/alerts")
    _wait(browser, lambda d: "ingest-down" in _text(d, "alerts-rules-table"), "the planted rules never showed")
    _wait(browser, lambda d: _history_cells(d) == _expected_cells(expected_history),
          f"the history never matched the store's; last seen {_history_cells(browser)}")
    assert PHONE not in browser.page_source and EMAIL not in browser.page_source
    assert mask_address(PHONE) in _text(browser, "alerts-history-table")

    # A rule through the form, with a mistake first: the message, not a traceback.
    _type(browser, "alert-name", "confident/buys")
    _choose(browser, "alert-signal", "BUY")
    _type(browser, "alert-min-confidence", "75")
    _type(browser, "alert-min-return", "1.5")
    _type(browser, "alert-symbols", "nvda, amd")
    _type(browser, "alert-recipients", "sms +15557654321\nemail desk@example.com")
    _type(browser, "alert-throttle", "600")
    browser.find_element(By.ID, "alert-save").click()
    _wait(browser, lambda d: "Name: letters, digits" in _text(d, "alert-form-errors"), "no message for a bad name")
    assert "Traceback" not in browser.page_source
    _type(browser, "alert-name", "nvda-amd-buys")
    browser.find_element(By.ID, "alert-save").click()
    _wait(browser, lambda d: "Created rule 'nvda-amd-buys'" in _text(d, "alerts-status"), "the rule was not created")

    expected = RuleSpec.model_validate({
        "name": "nvda-amd-buys", "on_signal": {"signal": "BUY", "min_confidence": 0.75, "min_abs_return": 0.015},
        "symbols": ["AMD", "NVDA"], "throttle_seconds": 600,
        "recipients": [{"channel": "sms", "address": "+15557654321"}, {"channel": "email", "address": "desk@example.com"}]})
    engine = AlertStore(settings.alerts_db_url)
    assert [r.spec for r in engine.rules()] == [signal_spec(quiet_hours=None), pipeline_spec(), expected]

    # Disabled on the page: disabled in the engine.
    _wait(browser, lambda d: "nvda-amd-buys" in _text(d, "alerts-rules-table"), "the new rule never showed")
    _click_in_row(browser, "nvda-amd-buys", "button.rule-toggle")
    _wait(browser, lambda d: engine.rule("nvda-amd-buys").spec.enabled is False, "the rule was never disabled")
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "tr[data-rule='nvda-amd-buys'] .rule-enabled").text
          == "off", "the table never showed the rule off")
    assert engine.rule("nvda-amd-buys").spec == expected.model_copy(update={"enabled": False})
    screenshot(browser, "alerts")

    # Edited: the form shows the stored rule in its units; what is saved is the rule changed only there.
    _click_in_row(browser, "confident-buys", "button.rule-edit")
    _wait(browser, lambda d: "Edit rule 'confident-buys'" in _text(d, "alert-form-title"), "the form never opened")
    assert browser.find_element(By.ID, "alert-min-confidence").get_attribute("value") == "60"
    assert browser.find_element(By.ID, "alert-recipients").get_attribute("value") == f"sms {PHONE}\nemail {EMAIL}"
    _type(browser, "alert-throttle", "900")
    browser.find_element(By.ID, "alert-save").click()
    _wait(browser, lambda d: "Saved rule 'confident-buys'" in _text(d, "alerts-status"), "the edit was not saved")
    assert engine.rule("confident-buys").spec == signal_spec(quiet_hours=None, throttle_seconds=900)
    _wait(browser, lambda d: "throttle 900 s" in _text(d, "alert-rule-1"), "the table never showed the edit")

    # Deleted after the confirmation.
    _click_in_row(browser, "nvda-amd-buys", "button.rule-delete")
    confirmation = _wait(browser, ec.alert_is_present(), "no confirmation asked")
    assert confirmation.text == "Delete the alert rule 'nvda-amd-buys'? Its alerts stay in the history."
    confirmation.accept()
    _wait(browser, lambda d: [r.name for r in engine.rules()] == ["confident-buys", "ingest-down"],
          "the rule was never deleted")
    engine.close()

    # The history filtered by rule, from the URL.
    browser.get(f"{alerts_dashboard.url}/alerts?rule=ingest-down")
    only = [r for r in expected_history if r["rule"] == "ingest-down"]
    _wait(browser, lambda d: _history_cells(d) == _expected_cells(only), "the history was never filtered")

    log = alerts_dashboard.log.read_text()
    for line in ("analyst created alert rule 'nvda-amd-buys'", "analyst disabled alert rule 'nvda-amd-buys'",
                 "analyst changed alert rule 'confident-buys'", "analyst deleted alert rule 'nvda-amd-buys'"):
        assert line in log
    assert "+15557654321" not in log and "desk@example.com" not in log
