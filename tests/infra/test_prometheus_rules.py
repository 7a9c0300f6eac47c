"""Prometheus' configuration as `tickcast up` writes it and the rules of infra/prometheus/, checked
by Prometheus' own promtool: the config of each profile and the rules pass, the alerting rules'
unit tests (prometheus_rules_test.yml) pass, and a broken rule fails the check. Every PromQL query
the Dash pipeline page, the Grafana dashboard and the alert routing send parses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tickcast.alerts.prometheus_alerts import PrometheusAlerts
from tickcast.core.settings import REPO_ROOT, Settings
from tickcast.platform import exporter, grafana, jmx, prometheus
from tickcast.platform.panels import CHARTS

# Debian's prometheus package, which `make bootstrap` installs (the acceptance asks for these checks).
PROMTOOL = "/usr/bin/promtool"
RULES = sorted((REPO_ROOT / "infra" / "prometheus").glob("*.yml"))
HERE = Path(__file__).parent


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_the_rule_files_pass_promtool() -> None:
    assert {path.name for path in RULES} == set(prometheus.RULE_FILES)
    checked = promtool("check", "rules", *RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(RULES)


def _profile(settings: Settings, profile: str) -> Settings:
    # Through validation, as the environment would give it: the profile's defaults apply.
    return Settings.model_validate({"home": settings.home_dir, "profile": profile})


@pytest.mark.parametrize("profile", ["single", "cluster"])
def test_the_generated_config_passes_promtool_with_its_rules(settings: Settings, profile: str) -> None:
    settings = _profile(settings, profile)
    path = prometheus.write_scrape_config(settings)
    checked = promtool("check", "config", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool checks the rule files the config names, too.
    assert all(str(rule) in checked.stdout for rule in RULES), checked.stdout

    config = yaml.safe_load(path.read_text())
    assert sorted(config["rule_files"]) == [str(rule) for rule in RULES]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for job in jobs.values() for t in job["static_configs"][0]["targets"]]
    assert all(t.startswith("127.0.0.1:") for t in targets)
    if profile == "single":
        assert set(jobs) == {"pipeline", "api", "prometheus"}
        return
    assert set(jobs) == {"pipeline", "api", "prometheus", "kafka", "spark-master", "spark-worker"}
    assert jobs["kafka"]["static_configs"][0]["targets"] == ["127.0.0.1:9404", "127.0.0.1:9405", "127.0.0.1:9406"]
    assert jobs["spark-master"]["metrics_path"] == "/metrics/master/prometheus/"
    assert jobs["spark-master"]["static_configs"][0]["targets"] == [f"127.0.0.1:{settings.spark_master_webui_port}"]
    assert len(jobs["spark-worker"]["static_configs"][0]["targets"]) == settings.spark_workers == 2


def test_every_alert_is_routed_to_the_alert_engine() -> None:
    """The engine reads the alerts whose name has its prefix (tickcast/alerts/prometheus_alerts.py)."""
    prefix = Settings.model_fields["alerts_prometheus_alert_prefix"].default
    alerts = [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule]
    assert alerts and all(rule["alert"].startswith(prefix) for rule in alerts)
    assert all(rule["labels"]["severity"] in ("info", "warning", "critical") and rule["annotations"]["summary"]
               for rule in alerts)


def test_a_broken_rule_fails_the_checks(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Broken", "expr": "rate(http_requests_total[5m]", "labels": {"severity": "warning"}}]}]}))
    checked = promtool("check", "rules", broken)
    assert checked.returncode != 0
    assert "parse error" in checked.stdout + checked.stderr

    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"rule_files": [str(broken)], "scrape_configs": []}))
    assert promtool("check", "config", config).returncode != 0


def test_the_alerting_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", HERE / "prometheus_rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: the same cases expecting the target-down alert 30 s in."""
    cases = yaml.safe_load((HERE / "prometheus_rules_test.yml").read_text())
    cases["rule_files"] = [str(rule) for rule in RULES]
    cases["tests"][0]["alert_rule_test"][0]["exp_alerts"] = cases["tests"][0]["alert_rule_test"][1]["exp_alerts"]
    wrong = tmp_path / "wrong_test.yml"
    wrong.write_text(yaml.safe_dump(cases))
    tested = promtool("test", "rules", wrong)
    assert tested.returncode != 0 and "TickcastTargetDown" in tested.stdout + tested.stderr


def test_every_shared_query_parses(tmp_path: Path) -> None:
    """Each query as a recording rule, checked by promtool: the Dash page's (seconds), Grafana's
    (its interval variable, which Grafana replaces by a duration before Prometheus sees it) and
    the alert routing's."""
    routing = PrometheusAlerts("http://127.0.0.1:1", timeout=1, lookback_seconds=3600)
    try:
        exprs = [chart.query(60) for chart in CHARTS]
        exprs += [target["expr"].replace("$__rate_interval", "1m")
                  for dashboard in grafana.dashboards().values()
                  for panel in dashboard["panels"] for target in panel["targets"]]
        exprs.append(routing.recent_query())
    finally:
        routing.close()
    rules = tmp_path / "queries.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": [
        {"record": f"tickcast:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}))
    checked = promtool("check", "rules", rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout


def api_metric_names() -> set[str]:
    """The names of the samples the API's /metrics can hold (serving/metrics.py)."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from serving.metrics import RequestMetrics, ServingMetrics

    registry = CollectorRegistry()
    RequestMetrics(None, registry)  # type: ignore[arg-type]
    ServingMetrics(registry, SimpleNamespace(clients=set(), latest={}, last_model=None))  # type: ignore[arg-type]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def test_the_rules_name_only_metrics_that_exist() -> None:
    """Each metric of the rules is one the platform exports: the exporter's, the API's
    (serving/metrics.py), the JMX agent's (infra/jmx/kafka.yml), Spark's servlet, or a recorded one."""
    import re

    text = "\n".join(path.read_text() for path in RULES)
    exprs = [rule["expr"] for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
             for rule in group["rules"]]
    recorded = set(re.findall(r"record: (\S+)", text))
    # Spark's servlet: seen on a master of the pyspark wheel (4.2) with spark_metrics.DAEMON_OPTIONS.
    known = set(exporter.HELP) | recorded | api_metric_names() | {"up", "metrics_master_aliveWorkers_Value"}
    jmx_rules = jmx.AGENT_CONFIG.read_text()
    for name in re.findall(r"\b((?:kafka_|tickcast_|http_|metrics_|job:|query:|query_topic:)[A-Za-z0-9_:]+)",
                           "\n".join(exprs)):
        if name.startswith("kafka_"):
            # The agent's rules name them: kafka_server_replicamanager_$1, lowercased.
            prefix, _, suffix = name.partition("_total") if name.endswith("_total") else (name, "", "")
            assert any(prefix.startswith(rule.split("$1")[0]) for rule in
                       re.findall(r"name: (\S+)", jmx_rules)), name
            continue
        assert name in known, name


@pytest.mark.slow
def test_in_a_real_prometheus_every_rule_evaluates_and_every_chart_query_answers(settings: Settings,
                                                                                  tmp_path: Path) -> None:
    """The platform's Prometheus (its command and generated config, rules included) scraping the
    pipeline exporter: every rule evaluates without error, the batch-over-trigger ratio joins the
    exporter's two gauges, and each query of the Dash page (and so of Grafana) answers."""
    from datetime import UTC, datetime, timedelta

    import httpx

    from tests.platform.pipeline_standins import WATERMARKS, running_prometheus, ticks_progress
    from tickcast.catalog.progress import ProgressFile, progress_path
    from tickcast.platform.processes import wait_until

    settings = settings.model_copy(update={"ingest_trigger_seconds": 0.2})
    ProgressFile(progress_path(settings, "ingest")).record("ticks", ticks_progress(datetime.now(UTC)))
    registry = exporter.registry_for(settings, watermarks=lambda _s, _t: WATERMARKS, versions=lambda _s, _t: None)
    with running_prometheus(settings, registry, tmp_path / "prometheus.log") as settings:
        url = prometheus.base_url(settings)
        groups: list = []

        def evaluated() -> bool:
            groups[:] = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            return bool(groups) and all(rule.get("lastEvaluation", "").startswith("20")
                                        for group in groups for rule in group["rules"])

        wait_until(evaluated, 60, "every rule evaluated once", interval=0.5)
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == sum(len(g["rules"]) for path in RULES for g in yaml.safe_load(path.read_text())["groups"])
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

        def ratio() -> list:
            answer = httpx.get(f"{url}/api/v1/query", params={"query": "query:tickcast_stream_batch_over_trigger:ratio"},
                               timeout=5).json()
            return answer["data"]["result"]

        wait_until(lambda: bool(ratio()), 30, "the batch-over-trigger ratio recorded", interval=0.5)
        [series] = ratio()
        assert series["metric"]["query"] == "ticks" and float(series["value"][1]) == pytest.approx(0.48 / 0.2)

        client = prometheus.PrometheusClient.for_settings(settings)
        end = datetime.now(UTC)
        try:
            for chart in CHARTS:
                client.query_range(chart.query(2), end - timedelta(minutes=1), end, 1)  # raises on an error answer
            [drawn] = client.query_range(CHARTS[0].query(2), end - timedelta(minutes=1), end, 1)
            assert drawn.labels["query"] == "ticks" and drawn.values
        finally:
            client.close()
