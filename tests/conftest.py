"""Shared fixtures: one Spark session and one real Kafka broker per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tickcast.core.settings import Settings
from tickcast.platform.jars import ensure_jars

# Twilio/SendGrid clients rewrite hosts from these; tests talk to local stand-ins.
for _var in ("TWILIO_REGION", "TWILIO_EDGE"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tickcast-home")


@pytest.fixture(scope="session")
def base_settings(session_home: Path) -> Settings:
    settings = Settings(home=session_home, spark_master="local[2]", spark_shuffle_partitions=2)
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
