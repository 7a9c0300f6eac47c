"""The cluster profile changes defaults only: what the environment sets still wins, and the
addresses that follow from the node counts follow them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickcast.core.profiles import CLUSTER
from tickcast.core.settings import SettingsError, load_settings


def test_single_is_one_process_of_each_engine() -> None:
    settings = load_settings()
    assert settings.profile == "single"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert (settings.kafka_nodes, settings.topic_replication_factor, settings.topic_min_insync_replicas) == (1, 1, 1)
    assert settings.spark_master == "local[*]"
    assert settings.alerts_db_url.startswith("sqlite:///")
    assert settings.mlflow_backend_uri.startswith("sqlite:///")
    assert settings.api_keys_db_url == f"sqlite:///{settings.api_keys_path}"
    assert settings.rate_limit_storage_uri == "memory://"


def test_cluster_runs_distributed_engines(tmp_path: Path) -> None:
    settings = load_settings(profile="cluster", home=tmp_path)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert settings.kafka_node_ports == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
    assert settings.spark_master == "spark://127.0.0.1:7077"
    # The SCRAM logins of the embedded broker apply to every node of the embedded cluster.
    assert settings.kafka_uses_embedded_auth
    socket_dir = settings.postgres_socket_dir
    assert settings.alerts_db_url == f"postgresql+psycopg://tickcast@/alerts?host={socket_dir}&port=5433"
    assert settings.mlflow_backend_uri.startswith("postgresql+psycopg://tickcast@/mlflow?")
    assert settings.api_keys_db_url.startswith("postgresql+psycopg://tickcast@/auth?")
    assert settings.postgres_url("airflow", driver="psycopg2").startswith("postgresql+psycopg2://tickcast@/airflow?")
    for name, value in CLUSTER.items():
        assert getattr(settings, name) == value, name


def test_the_environment_wins_over_the_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TICKCAST_PROFILE", "cluster")
    monkeypatch.setenv("TICKCAST_KAFKA_BROKER_PORT", "19092")
    monkeypatch.setenv("TICKCAST_SPARK_WORKERS", "3")
    monkeypatch.setenv("TICKCAST_SPARK_MASTER_PORT", "17077")
    monkeypatch.setenv("TICKCAST_ALERTS_DATABASE_URL", "postgresql+psycopg://alerts@db.internal/alerts")
    settings = load_settings(home=tmp_path)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert settings.spark_workers == 3
    assert settings.spark_master == "spark://127.0.0.1:17077"
    assert settings.alerts_db_url == "postgresql+psycopg://alerts@db.internal/alerts"
    monkeypatch.setenv("TICKCAST_KAFKA_BOOTSTRAP_SERVERS", "kafka-0.kafka:9092")
    monkeypatch.setenv("TICKCAST_KAFKA_EMBEDDED", "false")
    assert load_settings(home=tmp_path).kafka_bootstrap_servers == "kafka-0.kafka:9092"


def test_embedded_redis_serves_every_consumer_left_without_an_address(tmp_path: Path) -> None:
    settings = load_settings(profile="cluster", home=tmp_path)
    settings.redis_password_path.parent.mkdir(parents=True)
    settings.redis_password_path.write_text("p@ss/word\n")
    assert settings.rate_limit_storage_uri == "redis://:p%40ss%2Fword@127.0.0.1:6390/1"
    assert settings.predictions_redis == "redis://:p%40ss%2Fword@127.0.0.1:6390/2"
    assert settings.feast_redis_connection_string == "127.0.0.1:6390,db=0,password=p@ss/word"
    own = load_settings(profile="cluster", home=tmp_path, api_rate_limit_storage="redis://cache:6379/4")
    assert own.rate_limit_storage_uri == "redis://cache:6379/4"


@pytest.mark.parametrize(("overrides", "named"), [
    ({"topic_replication_factor": 3}, "TICKCAST_TOPIC_REPLICATION_FACTOR=3 needs as many Kafka nodes"),
    ({"profile": "cluster", "topic_min_insync_replicas": 4}, "TICKCAST_TOPIC_MIN_INSYNC_REPLICAS=4 is more than"),
])
def test_replication_the_cluster_cannot_give_is_refused(overrides: dict, named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    assert named in str(refused.value)


def test_a_long_home_moves_the_postgres_socket_under_tmp(tmp_path: Path) -> None:
    settings = load_settings(profile="cluster", home=tmp_path / ("x" * 90))
    assert settings.postgres_socket_dir.parent == Path("/tmp")
    assert len(str(settings.postgres_socket_dir / ".s.PGSQL.5433")) < 107
