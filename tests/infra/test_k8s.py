"""The Kubernetes manifests of infra/k8s, checked without a cluster: every resource against the
Kubernetes API's schemas (kubernetes-validate, strict: an unknown field is an error), the
ConfigMap against the settings, the kustomizations against their directories, every pod closed
and bounded, and the Airflow chart's values against what the chart and the manifests need."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate.utils as kubernetes_validate
import pytest
import yaml

from tickcast.core.settings import REPO_ROOT, Settings, SettingsError, load_settings

K8S = REPO_ROOT / "infra" / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
AIRFLOW_VALUES = K8S / "airflow" / "values.yaml"
# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Made by the operator (cert-manager, or `kubectl create secret tls`): infra/k8s/README.md.
EXTERNAL_SECRETS = {"tickcast-tls"}
# What a fake real secret looks like to the settings (none of PLACEHOLDER_SECRETS).
FAKE_SECRET = "k8s-test-Secret-7f3a9c"


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under infra/k8s: not the kustomizations, not the Helm values."""
    return sorted(path for path in K8S.rglob("*.yaml")
                  if path.name != "kustomization.yaml" and path != AIRFLOW_VALUES)


def resources(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validation_errors(paths: list[Path], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """One line per resource that a Kubernetes version's strict schema refuses."""
    errors = []
    for path in paths:
        for resource in resources(path):
            for version in versions:
                try:
                    kubernetes_validate.validate(resource, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    where = ".".join(str(part) for part in exc.path)
                    errors.append(f"{path.name}: {resource['kind']}/{resource['metadata']['name']} "
                                  f"(Kubernetes {version}) at {where}: {exc.message}")
    return errors


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return [resource for path in sorted(BASE.glob("*.yaml")) if path.name != "kustomization.yaml"
            for resource in resources(path)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload."""
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]


def kustomization(directory: Path) -> dict[str, Any]:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as kustomize's secretGenerator reads them (comments and blanks skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def production_config(base: list[dict[str, Any]]) -> dict[str, str]:
    """The ConfigMap's data with the production overlay's patches applied."""
    data = dict(find(base, "ConfigMap", "tickcast-config")["data"])
    for patch in kustomization(PRODUCTION)["patches"]:
        assert patch["target"] == {"kind": "ConfigMap", "name": "tickcast-config"}, patch["target"]
        for op in yaml.safe_load(patch["patch"]):
            key = op["path"].removeprefix("/data/")
            assert op["op"] in ("add", "replace") and "/" not in key, op
            assert op["op"] == "add" or key in data, f"replace of a key the base does not set: {key}"
            data[key] = op["value"]
    return data


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod with exactly this environment loads."""
    for name in list(os.environ):
        if name.startswith("TICKCAST_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


# --- schemas ----------------------------------------------------------------------------------

def test_every_manifest_passes_strict_validation() -> None:
    files = manifest_files()
    kinds = {resource["kind"] for path in files for resource in resources(path)}
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy", "Namespace"} <= kinds
    assert validation_errors(files) == []


@pytest.mark.parametrize(("change", "message"), [
    (lambda spec: spec.update(replica=spec.pop("replicas")), "Additional properties are not allowed ('replica' was unexpected)"),
    (lambda spec: spec.update(replicas="two"), "'two' is not of type 'integer'"),
], ids=["misspelled-field", "wrong-type"])
def test_a_broken_manifest_fails_validation(change: Any, message: str, tmp_path: Path) -> None:
    deployment = resources(BASE / "scorer.yaml")[0]
    change(deployment["spec"])
    broken = tmp_path / "scorer.yaml"
    broken.write_text(yaml.safe_dump(deployment))

    errors = validation_errors([broken])

    assert len(errors) == len(KUBERNETES_VERSIONS)
    assert all(error.startswith("scorer.yaml: Deployment/scorer") and message in error for error in errors), errors


def test_the_production_overlay_renders_to_valid_resources(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed")
    # The overlay needs its env files, which are never committed: the examples stand in for them.
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env"))
    overlay = tree / "overlays" / "production"
    for example in overlay.glob("*.env.example"):
        shutil.copy(example, overlay / example.name.removesuffix(".example"))
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(done.stdout)

    assert validation_errors([rendered]) == []
    docs = resources(rendered)
    assert find(docs, "ConfigMap", "tickcast-config")["data"]["TICKCAST_MODE"] == "production"
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"tickcast"}
    secrets = {d["metadata"]["name"]: set(d["data"]) for d in docs if d["kind"] == "Secret"}
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for name, template in workloads(docs):
        for container in template["spec"]["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            assert repository and tag, f"{name}: image {container['image']} is not pinned"
            for ref in container.get("envFrom", []):
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in secrets, f"{name}: no Secret {ref['secretRef']['name']}"
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in config_maps, f"{name}: no ConfigMap {ref['configMapRef']}"
            for env in container.get("env", []):
                key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if key_ref:
                    assert key_ref["key"] in secrets.get(key_ref["name"], set()), f"{name}: {key_ref}"
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets.keys() | EXTERNAL_SECRETS, f"{name}: {volume}"
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{name}: {volume}"


# --- settings ---------------------------------------------------------------------------------

def test_every_configmap_key_is_a_settings_field(base: list[dict[str, Any]]) -> None:
    data = find(base, "ConfigMap", "tickcast-config")["data"]
    secrets = env_file(PRODUCTION / "tickcast.env.example")
    commented = re.findall(r"^# (TICKCAST_[A-Z0-9_]+)=", (PRODUCTION / "tickcast.env.example").read_text(), re.M)
    fields = set(Settings.model_fields)
    for key in [*data, *secrets, *commented]:
        assert key.startswith("TICKCAST_") and key.removeprefix("TICKCAST_").lower() in fields, key
    assert not set(data) & set(secrets), "a setting is both in the ConfigMap and in the Secret"


def test_the_base_configmap_loads(base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    data = find(base, "ConfigMap", "tickcast-config")["data"]
    settings = settings_from({**data, **env_file(PRODUCTION / "tickcast.env.example")}, monkeypatch)
    assert settings.mode == "local" and settings.profile == "cluster"
    assert settings.home == Path(data["TICKCAST_HOME"])


def test_the_production_configmap_loads_with_real_secrets(base: list[dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {key: value.replace("changeme", FAKE_SECRET)
               for key, value in env_file(PRODUCTION / "tickcast.env.example").items()}
    settings = settings_from({**production_config(base), **secrets}, monkeypatch)

    assert settings.mode == "production"
    # The cluster profile with every engine outside the pod.
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
    assert not (settings.kafka_embedded or settings.postgres_embedded or settings.redis_embedded)
    assert not settings.kafka_uses_embedded_auth
    assert settings.kafka_client_config("api")["sasl.password"] == FAKE_SECRET
    assert settings.rate_limit_storage_uri.startswith("redis://")
    assert settings.predictions_redis.startswith("redis://")
    assert urlsplit(settings.api_keys_db_url).hostname == "postgres"
    assert urlsplit(settings.alerts_db_url).hostname == "postgres"
    assert settings.tracking_uri == "http://mlflow:5000"


def test_production_refuses_the_example_secrets(base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="is a placeholder; set a real secret outside local mode"):
        settings_from({**production_config(base), **env_file(PRODUCTION / "tickcast.env.example")}, monkeypatch)


def test_the_databases_and_services_named_in_the_settings_exist(base: list[dict[str, Any]]) -> None:
    init = find(base, "ConfigMap", "postgres-init")["data"]["databases.sql"]
    assert set(re.findall(r"CREATE DATABASE (\w+);", init)) == set(Settings.POSTGRES_DATABASES)
    postgres = find(base, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POSTGRES_USER", "value": Settings.POSTGRES_USER} in postgres["env"]
    services = {d["metadata"]["name"]: d for d in base if d["kind"] == "Service"}
    urls = [*env_file(PRODUCTION / "tickcast.env.example").values(),
            *env_file(PRODUCTION / "mlflow.env.example").values(), env_file(PRODUCTION / "airflow.env.example")["connection"]]
    for url in (u for u in urls if "://" in u):
        parts = urlsplit(url)
        assert parts.hostname in services and any(p["port"] == parts.port for p in services[parts.hostname]["spec"]["ports"]), url
    # The Spark master's name resolves to its pod (StatefulSet pod 0 behind its headless Service),
    # and is the host it advertises.
    config = find(base, "ConfigMap", "tickcast-config")["data"]
    master = find(base, "StatefulSet", "spark-master")
    host = f"{master['metadata']['name']}-0.{master['spec']['serviceName']}"
    assert config["TICKCAST_SPARK_MASTER"] == f"spark://{host}:7077"
    assert services[master["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    command = master["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--host") + 1] == host



def test_every_spark_driver_is_reachable_by_its_executors(base: list[dict[str, Any]]) -> None:
    drivers = [(name, t) for name, t in workloads(base) if t["metadata"]["labels"].get("tickcast.io/spark") == "driver"]
    assert {name for name, _ in drivers} == {"Deployment/ingest-ticks", "Deployment/ingest-bars"}
    for name, template in drivers:
        env = template["spec"]["containers"][0]["env"]
        # The settings' default, 127.0.0.1, would send every executor to its own pod.
        assert {"name": "TICKCAST_SPARK_DRIVER_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in env, name
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    assert yaml.safe_load(values["extraEnv"]) == [
        {"name": "TICKCAST_SPARK_DRIVER_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    assert values["labels"]["tickcast.io/spark"] == "driver"


# --- kustomize ----------------------------------------------------------------------------------

def test_each_kustomization_lists_exactly_its_files() -> None:
    listed = kustomization(BASE)["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(p.name for p in BASE.iterdir()) == sorted([*listed, "kustomization.yaml"])

    production = kustomization(PRODUCTION)
    assert production["resources"] == ["../../base"]
    envs = [env for generator in production["secretGenerator"] for env in generator["envs"]]
    committed = sorted(p.name for p in PRODUCTION.iterdir() if not p.name.endswith(".env"))
    assert committed == sorted(["kustomization.yaml", *(f"{env}.example" for env in envs)])


def test_images_are_pinned_in_one_place(base: list[dict[str, Any]]) -> None:
    pinned = {image["name"]: image for image in kustomization(BASE)["images"]}
    assert all(image.get("newTag") or image.get("digest") for image in pinned.values())
    for name, template in workloads(base):
        for container in template["spec"]["containers"]:
            assert container["image"] in pinned, f"{name}: image {container['image']} is not one of {sorted(pinned)}"


# --- closed by default ----------------------------------------------------------------------------

def test_every_container_is_closed_bounded_and_probed(base: list[dict[str, Any]]) -> None:
    names = []
    for name, template in workloads(base):
        names.append(name)
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            where = f"{name} {container['name']}"
            assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                     "capabilities": {"drop": ["ALL"]}}, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"
            if container.get("ports"):
                assert "livenessProbe" in container and "readinessProbe" in container, f"{where} serves unprobed"
    assert {"Deployment/api", "Deployment/scorer", "Deployment/alerts", "Deployment/dashboard", "Deployment/mlflow",
            "Deployment/ingest-ticks", "StatefulSet/postgres", "StatefulSet/redis"} <= set(names)


def test_the_probes_ask_the_real_health_routes(base: list[dict[str, Any]]) -> None:
    from dashboard.security import PUBLIC_PATHS
    from serving.routes.ops import router

    api_routes = {getattr(route, "path", None) for route in router.routes}
    api = find(base, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert {api["readinessProbe"]["httpGet"]["path"], api["livenessProbe"]["httpGet"]["path"]} <= api_routes

    dashboard = find(base, "Deployment", "dashboard")["spec"]["template"]["spec"]["containers"][0]
    allowed = find(base, "ConfigMap", "tickcast-config")["data"]["TICKCAST_DASHBOARD_ALLOWED_HOSTS"].split(",")
    for probe in (dashboard["readinessProbe"], dashboard["livenessProbe"]):
        # The one route that answers without a session, asked with a Host the dashboard accepts.
        assert probe["httpGet"]["path"] in PUBLIC_PATHS
        assert {"name": "Host", "value": "localhost"} in probe["httpGet"]["httpHeaders"]
    assert "localhost" in allowed
    # Both serve HTTPS (production refuses a bind off loopback without TLS).
    for container in (api, dashboard):
        assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_the_namespace_is_closed_by_default(base: list[dict[str, Any]]) -> None:
    policies = [d for d in base if d["kind"] == "NetworkPolicy"]
    deny = find(policies, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def selected(labels: dict[str, str], policy: dict[str, Any], direction: str) -> bool:
        spec = policy["spec"]
        if direction not in spec["policyTypes"] or not spec.get(direction.lower()):
            return False
        selector = spec["podSelector"]
        return (all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
                and all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])))

    for name, template in workloads(base):
        labels = template["metadata"]["labels"]
        if any(c.get("ports") for c in template["spec"]["containers"]):
            assert any(selected(labels, p, "Ingress") for p in policies), f"{name} serves but admits nobody"
        for key, value in labels.items():
            if key.startswith("tickcast.io/") and value == "client":
                assert any(selected({key: value}, p, "Egress") for p in policies), f"no policy for {key}"


# --- Airflow's chart values ----------------------------------------------------------------------

def test_the_airflow_values_have_what_the_chart_and_the_manifests_need(base: list[dict[str, Any]]) -> None:
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    pin = tomllib.loads((REPO_ROOT / "airflow" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"apache-airflow=={values['airflowVersion']}" in pin
    assert values["executor"] in {"LocalExecutor", "CeleryExecutor", "KubernetesExecutor"}
    assert values["defaultAirflowRepository"] and values["defaultAirflowTag"]
    # Our PostgreSQL, not the chart's; the DAGs from the image.
    assert values["postgresql"]["enabled"] is False
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False

    # Each secret the chart reads is generated by the overlay, with the key the chart reads.
    generated = {g["name"]: env_file(PRODUCTION / f"{g['envs'][0]}.example")
                 for g in kustomization(PRODUCTION)["secretGenerator"]}
    for name, key in ((values["data"]["metadataSecretName"], "connection"), (values["fernetKeySecretName"], "fernet-key"),
                      (values["apiSecretKeySecretName"], "api-secret-key"), (values["jwtSecretName"], "jwt-secret")):
        assert key in generated.get(name, {}), f"Secret {name} has no key {key}"
    metadata = urlsplit(generated[values["data"]["metadataSecretName"]]["connection"])
    assert metadata.path.strip("/") == "airflow" and "airflow" in Settings.POSTGRES_DATABASES

    # The TickCast environment: the ConfigMap and Secret the pods read, the shared home.
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert {"configMapRef": {"name": "tickcast-config"}} in env_from
    assert any(ref.get("secretRef", {}).get("name") in generated for ref in env_from)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in values["volumes"]}
    assert claims == {find(base, "PersistentVolumeClaim", "tickcast-data")["metadata"]["name"]}
    home = find(base, "ConfigMap", "tickcast-config")["data"]["TICKCAST_HOME"]
    assert [m["mountPath"] for m in values["volumeMounts"]] == [home]
    assert {e["name"] for e in values["env"]} >= {"TICKCAST_PYTHON", "TICKCAST_BIN"}
    # Admitted by the network policies as a client of what its tasks use.
    assert values["labels"]["tickcast.io/postgres"] == "client"
