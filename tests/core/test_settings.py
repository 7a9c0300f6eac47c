"""What production refuses that local mode allows: open doors a developer's machine can live with."""

from __future__ import annotations

import pytest

from tickcast.core.settings import SettingsError, is_loopback, load_settings


def test_local_mode_allows_a_sandbox() -> None:
    settings = load_settings(mode="local", api_auth_enabled=False, api_host="0.0.0.0")
    assert settings.api_auth_enabled is False


@pytest.mark.parametrize(("overrides", "named"), [
    ({"api_auth_enabled": False}, "TICKCAST_API_AUTH_ENABLED=false"),
    ({"api_host": "0.0.0.0"}, "TICKCAST_API_HOST=0.0.0.0 listens off loopback without TLS"),
    ({"dashboard_host": "10.1.2.3"}, "TICKCAST_DASHBOARD_HOST=10.1.2.3 listens off loopback without TLS"),
    ({"mlflow_host": "::"}, "TICKCAST_MLFLOW_HOST=:: listens off loopback"),
    ({"airflow_host": "build-box"}, "TICKCAST_AIRFLOW_HOST=build-box listens off loopback"),
    ({"tls_certfile": "/etc/tickcast/cert.pem"}, "set both TICKCAST_TLS_CERTFILE and TICKCAST_TLS_KEYFILE"),
    ({"dashboard_session_secret": "changeme"}, "TICKCAST_DASHBOARD_SESSION_SECRET is a placeholder"),
])
def test_production_refuses_open_doors(overrides: dict, named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(mode="production", **overrides)
    assert named in str(refused.value)


def test_production_serves_off_loopback_with_tls() -> None:
    settings = load_settings(mode="production", api_host="0.0.0.0", dashboard_host="0.0.0.0",
                             tls_certfile="/etc/tickcast/cert.pem", tls_keyfile="/etc/tickcast/key.pem")
    assert settings.api_host == "0.0.0.0"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False), ("example.org", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("overrides", "named"), [
    ({"alerts_database_url": "postgresql+psycopg://alerts:changeme@db/alerts"}, "TICKCAST_ALERTS_DATABASE_URL"),
    ({"api_keys_database_url": "postgresql+psycopg://keys:secret@db/auth"}, "TICKCAST_API_KEYS_DATABASE_URL"),
    ({"airflow_database_url": "postgresql+psycopg2://af:Change-Me@db/airflow"}, "TICKCAST_AIRFLOW_DATABASE_URL"),
    ({"predictions_redis_url": "redis://:token@cache:6379/2"}, "TICKCAST_PREDICTIONS_REDIS_URL"),
    ({"api_rate_limit_storage": "redis://:changeme@cache:6379/1"}, "TICKCAST_API_RATE_LIMIT_STORAGE"),
    ({"feast_redis_connection": "cache:6379,db=0,password=changeme"}, "TICKCAST_FEAST_REDIS_CONNECTION"),
    ({"mlflow_tracking_password": "test"}, "TICKCAST_MLFLOW_TRACKING_PASSWORD"),
])
def test_production_refuses_a_placeholder_password_inside_an_address(overrides: dict, named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(mode="production", **overrides)
    assert f"{named} carries a placeholder password" in str(refused.value)
    # The same address with a real password, or none (a unix socket, a trusted network), is taken.
    real = {name: value.replace("changeme", "s3cr3t-x").replace("secret@", "s3cr3t-x@")
            .replace("Change-Me", "s3cr3t-x").replace(":token@", ":s3cr3t-x@").replace("test", "s3cr3t-x")
            for name, value in overrides.items()}
    load_settings(mode="production", **real)


def test_production_takes_an_address_without_a_password() -> None:
    settings = load_settings(mode="production", alerts_database_url="postgresql+psycopg://alerts@/alerts?host=/run/pg",
                             feast_redis_connection="cache:6379,db=0")
    assert settings.alerts_db_url.startswith("postgresql+psycopg://alerts@")
