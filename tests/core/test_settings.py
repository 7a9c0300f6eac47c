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
