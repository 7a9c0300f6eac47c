"""Shared fixtures: one Spark session and one real Kafka broker per test session, a headless
Chromium per browser test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tickcast.core.settings import Settings
from tickcast.platform.jars import ensure_jars

# Twilio/SendGrid clients rewrite hosts from these; tests talk to local stand-ins.
for _var in ("TWILIO_REGION", "TWILIO_EDGE"):
    os.environ.pop(_var, None)


# The longest scopes (measured: each end-to-end file 1-4 minutes, the trained models, the DAG
# runs) start first, so the two workers do not end with one of them running a long file alone.
LONG_FIRST = ("e2e", "faults", "airflow_dags", "models")

# Debian's Chromium and its driver (the `browser` tests: the dashboard, Airflow's UI).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Workers collect (and see ``--dist`` as "no"); the controller schedules in their order.
    if not hasattr(config, "workerinput"):
        return
    root = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        parts = item.path.relative_to(root).parts
        return LONG_FIRST.index(parts[0]) if len(parts) > 1 and parts[0] in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: each directory's own order is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`make test` runs two pytest-xdist workers with ``--dist loadscope``, scoped here by
    directory: a directory's tests share session fixtures built once per worker (a trained
    model, a scored market), so they stay on one worker; the end-to-end tests share only the
    broker and are long, so each of their files is a scope of its own and the two workers take
    them side by side, and so are the fault-injection tests' (each restarts real jobs). (``xdist_group``
    marks would say the same, but xdist 3.8 cannot apply them under pytest 9, whose node ids
    are no longer ``_nodeid``.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class DirectoryScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            parts = path.split("/")
            return parts[1] if len(parts) > 2 and parts[1] not in ("e2e", "faults") else path

    return DirectoryScheduling(config, log)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tickcast-home")


@pytest.fixture(scope="session")
def base_settings(session_home: Path) -> Settings:
    # No Prometheus' alerts in the alert engines of the tests: the machine's own Prometheus may run.
    settings = Settings(home=session_home, spark_master="local[2]", spark_shuffle_partitions=2,
                        alerts_from_prometheus=False)
    ensure_jars(settings)
    return settings


@pytest.fixture(scope="session")
def spark(base_settings: Settings):
    from spark_jobs.session import build_spark

    session = build_spark(base_settings, "tickcast-tests", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    from tickcast.platform.broker import running_broker

    with running_broker(base_settings, tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def settings(tmp_path: Path, base_settings: Settings) -> Settings:
    """Settings with a fresh TICKCAST_HOME for one test."""
    return base_settings.model_copy(update={"home": tmp_path / "home"})


@pytest.fixture(scope="session")
def empty_tables(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``delta`` directory holding every Delta table, created empty (version 0) once per
    session as ``tickcast setup`` leaves them. Read-only: use ``tables_home``."""
    from tickcast.catalog.tables import delta_dir, ensure_tables

    template = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("empty-tables") / "home"})
    ensure_tables(spark, template)
    return delta_dir(template)


def _copy_tables(source: Path | Settings, settings: Settings) -> Settings:
    from tickcast.catalog.tables import delta_dir

    shutil.copytree(delta_dir(source) if isinstance(source, Settings) else source, delta_dir(settings))
    return settings


@pytest.fixture(scope="session")
def copy_tables():
    """``copy_tables(source, settings)``: ``settings`` with a copy of the Delta tables of
    ``source`` (a Settings, or a ``delta`` directory) as its own.

    Delta tables are relocatable (their logs hold paths relative to the table), so a copy
    is the same tables, versions and history included, without running Spark again: a
    module builds a state once and each test that changes it works on a copy."""
    return _copy_tables


@pytest.fixture
def tables_home(settings: Settings, empty_tables: Path) -> Settings:
    """``settings`` (a fresh home for one test) whose Delta tables already exist, empty:
    for tests about what is written into them rather than about creating them (creating
    the eight tables costs Spark several seconds per home)."""
    return _copy_tables(empty_tables, settings)


@pytest.fixture
def browser(tmp_path: Path):
    """Debian's Chromium, headless, with a profile of its own (no cookie outlives its test) and
    nothing phoning home."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def scored(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """A platform state with real models (tests/serving/market_data.build_scored), built once
    per session and only read: the API and dashboard tests share it."""
    from tests.serving.market_data import build_scored

    return build_scored(spark, base_settings, tmp_path_factory.mktemp("scored"))
