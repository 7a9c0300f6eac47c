"""Kafka principals and their credentials file, the client configuration per role, and what
production refuses of a Kafka connection (no broker: tests/platform/test_broker_auth.py has one)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tickcast.core import kafka_auth
from tickcast.core.kafka_auth import KafkaCredentialsError, ensure_credentials, read_password
from tickcast.core.settings import SettingsError, load_settings


def test_credentials_are_generated_once_for_every_role_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "kafka_credentials.json"
    users = ensure_credentials(path)
    assert set(users) == {*kafka_auth.ROLES, kafka_auth.CONTROLLER_USER}
    assert len(set(users.values())) == len(users) and all(len(p) >= 40 for p in users.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_credentials(path) == users  # kept: the broker was formatted with them


def test_a_role_missing_from_the_file_is_added_and_the_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "kafka_credentials.json"
    users = ensure_credentials(path)
    del users["monitor"]
    path.write_text(json.dumps({"mechanism": "SCRAM-SHA-512", "users": users}))
    path.chmod(0o644)
    completed = ensure_credentials(path)
    assert {k: v for k, v in completed.items() if k != "monitor"} == users and completed["monitor"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "kafka_credentials.json"
    path.write_text("{not json")
    with pytest.raises(KafkaCredentialsError, match="cannot read"):
        ensure_credentials(path)
    assert path.read_text() == "{not json"


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KafkaCredentialsError, match="tickcast setup"):
        read_password(tmp_path / "none.json", "feed")


def test_clients_of_the_embedded_broker_log_in_as_their_role(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_bootstrap_servers="localhost:9092")
    users = ensure_credentials(settings.kafka_credentials_path)
    config = settings.kafka_client_config("scorer")
    assert config == {"bootstrap.servers": "localhost:9092", "security.protocol": "SASL_PLAINTEXT",
                      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "scorer", "sasl.password": users["scorer"]}
    jaas = settings.spark_kafka_options("ingest")["kafka.sasl.jaas.config"]
    assert f'username="ingest" password="{users["ingest"]}"' in jaas and "ScramLoginModule" in jaas


def test_another_bootstrap_is_an_external_cluster_with_its_own_settings(tmp_path: Path) -> None:
    external = load_settings(home=tmp_path, kafka_bootstrap_servers="kafka-1:9093", kafka_security_protocol="SASL_SSL",
                             kafka_sasl_mechanism="PLAIN", kafka_sasl_username="svc", kafka_sasl_password="s3cr3t-value")
    assert not external.kafka_uses_embedded_auth
    assert external.kafka_client_config("feed")["sasl.username"] == "svc"  # one principal for every role
    # A broker on another port (the tests' PLAINTEXT one, say) is not the embedded broker either.
    other_port = load_settings(home=tmp_path, kafka_bootstrap_servers="127.0.0.1:19092")
    assert other_port.kafka_client_config("feed") == {"bootstrap.servers": "127.0.0.1:19092",
                                                      "security.protocol": "PLAINTEXT"}
    sandbox = load_settings(home=tmp_path, kafka_embedded_auth=False)
    assert sandbox.kafka_client_config("admin")["security.protocol"] == "PLAINTEXT"


@pytest.mark.parametrize(("overrides", "named"), [
    ({"kafka_embedded_auth": False}, "TICKCAST_KAFKA_EMBEDDED_AUTH=false runs the embedded broker without"),
    ({"kafka_embedded": False}, "TICKCAST_KAFKA_SECURITY_PROTOCOL=PLAINTEXT authenticates no client"),
    ({"kafka_embedded": False, "kafka_security_protocol": "SASL_SSL"},
     "needs TICKCAST_KAFKA_SASL_MECHANISM and TICKCAST_KAFKA_SASL_USERNAME"),
    ({"kafka_embedded": False, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
      "kafka_sasl_username": "svc", "kafka_sasl_password": "changeme"}, "TICKCAST_KAFKA_SASL_PASSWORD is a placeholder"),
    ({"kafka_embedded": False, "kafka_bootstrap_servers": "127.0.0.1:9092,kafka-2:9092",
      "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512",
      "kafka_sasl_username": "svc", "kafka_sasl_password": "a-real-secret"},
     "names kafka-2, off loopback, reached with SASL_PLAINTEXT"),
])
def test_production_refuses_an_open_or_clear_text_kafka(overrides: dict, named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(mode="production", **overrides)
    assert named in str(refused.value)
    load_settings(mode="local", **overrides)  # a developer's machine may


@pytest.mark.parametrize("overrides", [
    {},  # the embedded broker with authentication
    {"kafka_embedded": False, "kafka_bootstrap_servers": "kafka-1:9093,kafka-2:9093",
     "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
     "kafka_sasl_username": "svc", "kafka_sasl_password": "a-real-secret"},
    {"kafka_embedded": False, "kafka_bootstrap_servers": "[::1]:9092", "kafka_security_protocol": "SASL_PLAINTEXT",
     "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "svc", "kafka_sasl_password": "a-real-secret"},
])
def test_production_accepts_authenticated_kafka(overrides: dict) -> None:
    assert load_settings(mode="production", **overrides).mode == "production"
