"""Airflow's UI in real headless Chromium: sign in as the admin and see every TickCast DAG.

The api-server runs as the platform runs it (`tickcast airflow run api-server`, with the
environment supervisord gives its programs) on a free loopback port, over a metadata database
migrated and holding the DAGs serialized (`tickcast airflow cli dags reserialize`), with
Airflow's simple auth manager and the admin password it generated under AIRFLOW_HOME.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tickcast.core.settings import Settings
from tickcast.platform import airflow
from tickcast.platform.processes import TICKCAST, free_port, wait_until
from tickcast.platform.supervisor import program_environment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT = 90  # seconds; generous because CI machines are shared, not a speed check
START = 180  # seconds for the api-server to answer (two cores shared with the rest of the suite)
ADMIN = "admin"  # Airflow's default simple_auth_manager_users ("admin:admin"), which the platform keeps


def tickcast_dag_ids() -> set[str]:
    """The DAG ids the files in airflow/dags declare (``@tickcast_dag("id", ...)``), read from
    the source: every file but the shared module declares exactly one."""
    found: dict[str, list[str]] = {}
    for path in sorted(airflow.DAGS_FOLDER.glob("*.py")):
        if path.name == "tickcast_dags.py":  # what the DAGs share, no DAG
            continue
        found[path.name] = [
            node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tickcast_dag"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
        ]
    assert found and all(len(ids) == 1 for ids in found.values()), f"a DAG file without one tickcast_dag: {found}"
    return {ids[0] for ids in found.values()}


@dataclass(frozen=True)
class AirflowUI:
    url: str
    password: str
    settings: Settings


def _log_tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(line[:300] for line in text[-lines:])


def _stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process's whole group, SIGKILL to it if it is not gone in time."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader may be gone and a child of its group not
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


@pytest.fixture(scope="module")
def airflow_ui(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    root = tmp_path_factory.mktemp("airflow-ui")
    settings = base_settings.model_copy(update={"home": root / "home", "airflow_port": free_port()})
    # The configuration supervisord gives the platform's programs; cwd without a .env.
    env = {**os.environ, **program_environment(settings)}
    # Migrates the metadata database (as every component does first), then serializes the DAGs
    # into it: the api-server shows what is serialized, with no dag-processor running.
    done = subprocess.run([TICKCAST, "airflow", "cli", "dags", "reserialize"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    log_path = root / "api-server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([TICKCAST, "airflow", "run", "api-server"], env=env, cwd=root, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        password_file = airflow.password_file(settings)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the api-server exited with {proc.returncode}:\n{_log_tail(log_path)}")
            return airflow.health(settings) is not None and password_file.exists()

        wait_until(ready, START, "Airflow's api-server to answer", interval=0.5, on_timeout=lambda: _log_tail(log_path))
        yield AirflowUI(airflow.api_url(settings), json.loads(password_file.read_text())[ADMIN], settings)
    finally:
        _stop_group(proc)


def _sign_in(driver, ui: AirflowUI, password: str) -> None:
    """Open the UI (which sends a stranger to its login page) and submit the login form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ui.url}/")
    wait = WebDriverWait(driver, WAIT)
    wait.until(ec.url_contains("/auth/login"))
    wait.until(ec.visibility_of_element_located((By.NAME, "username"))).send_keys(ADMIN)
    wait.until(ec.visibility_of_element_located((By.NAME, "password"))).send_keys(password)
    # The button is enabled once both required fields hold something.
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "form button[type=submit]"))).click()


def _dag_links(driver, ui: AirflowUI) -> dict[str, str]:
    """The links to a DAG's own page (``/dags/<id>``, not its runs or tasks) shown on the page:
    DAG id -> the link's text."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    dag_page = re.compile(re.escape(f"{ui.url}/dags/") + r"([^/?#]+)/?")
    shown = {}
    for link in driver.find_elements(By.CSS_SELECTOR, "a[href*='/dags/']"):
        try:
            found = dag_page.fullmatch(link.get_attribute("href") or "")
            if found and link.is_displayed():
                shown[found.group(1)] = link.text
        except StaleElementReferenceException:  # the list re-rendered under us: read it again next poll
            continue
    return shown


def test_the_admin_signs_in_and_sees_every_tickcast_dag(browser, airflow_ui: AirflowUI, tmp_path: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    expected = tickcast_dag_ids()
    _sign_in(browser, airflow_ui, airflow_ui.password)
    # Signed in: sent on from the login page to where it came from.
    WebDriverWait(browser, WAIT).until(ec.url_to_be(f"{airflow_ui.url}/"))

    browser.get(f"{airflow_ui.url}/dags")
    seen: dict[str, str] = {}

    def listed(driver) -> bool:
        seen.clear()
        seen.update(_dag_links(driver, airflow_ui))
        return expected <= {dag_id for dag_id, text in seen.items() if text == dag_id}

    try:
        WebDriverWait(browser, WAIT, poll_frequency=0.25).until(listed)
    except TimeoutException as exc:
        browser.save_screenshot(str(tmp_path / "airflow-dags.png"))
        raise AssertionError(f"the DAG list never showed {sorted(expected)}; it showed {seen} at "
                             f"{browser.current_url} (screenshot in {tmp_path})") from exc
    assert browser.current_url == f"{airflow_ui.url}/dags"
    assert set(seen) == expected  # no other DAG (no examples)
    browser.save_screenshot(str(tmp_path / "airflow-dags.png"))


def test_a_wrong_password_is_refused(browser, airflow_ui: AirflowUI) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    _sign_in(browser, airflow_ui, airflow_ui.password + "-wrong")
    WebDriverWait(browser, WAIT).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Invalid credentials"))
    assert "/auth/login" in browser.current_url
    assert browser.find_element(By.NAME, "password").is_displayed()
    # Not signed in: the DAG list sends the browser back to the login page.
    browser.get(f"{airflow_ui.url}/dags")
    WebDriverWait(browser, WAIT).until(ec.url_contains("/auth/login"))
    assert _dag_links(browser, airflow_ui) == {}


def test_the_dashboards_airflow_client_reads_the_real_api(airflow_ui: AirflowUI) -> None:
    """What the dashboard's Pipeline page asks of Airflow (``AirflowApi``), asked of the real
    api-server: it signs in with the generated password and lists every DAG, none run yet."""
    api = airflow.AirflowApi(airflow_ui.settings)
    try:
        assert set(api.dag_ids()) == tickcast_dag_ids()
        runs = api.recent_runs(5)
        assert set(runs) == tickcast_dag_ids() and all(found == [] for found in runs.values())
    finally:
        api.close()
