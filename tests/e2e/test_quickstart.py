"""The README's quickstart, run as written on a fresh platform.

The commands between ``<!-- quickstart:begin -->`` and ``<!-- quickstart:end -->`` run in bash
(``set -euo pipefail``) from a directory that looks like the repository to them (``.venv`` is this
checkout's, ``var`` a fresh home), after ``tickcast up`` started every service on free ports. The
README's ports (8000, 8050, 5000) become those ports: the only change made to its text. Airflow and
Prometheus are left out (their own tests cover them); the quickstart only names Airflow's URL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tickcast.platform.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- quickstart:begin -->\s*```bash\n(.*?)```\s*<!-- quickstart:end -->", re.S)
README_PORTS = {"api": 8000, "dashboard": 8050, "mlflow": 5000}


def quickstart() -> str:
    found = BLOCK.search((REPO / "README.md").read_text())
    assert found, "README.md has no quickstart block"
    return found.group(1)


def test_the_readme_has_a_runnable_quickstart() -> None:
    script = quickstart()
    # What the issue asks a newcomer to be able to do: a key, a prediction, the dashboard's
    # sign-in, an alert in dry run, MLflow.
    for step in ("tickcast apikey create", "curl -s -H \"X-API-Key: $KEY\"", "dashboard_admin_password",
                 "tickcast alerts rules add", "tickcast alerts history", "/health"):
        assert step in script, step
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.fixture
def platform(tmp_path: Path):
    """``tickcast up`` on a fresh home with free ports, from a directory shaped like the repo."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(REPO / ".venv")
    home = root / "var"
    ports = {name: free_port() for name in ("api", "dashboard", "mlflow", "kafka", "controller", "prometheus",
                                            "metrics")}
    env = {
        **os.environ,
        "TICKCAST_HOME": str(home),
        "TICKCAST_API_PORT": str(ports["api"]),
        "TICKCAST_DASHBOARD_PORT": str(ports["dashboard"]),
        "TICKCAST_MLFLOW_PORT": str(ports["mlflow"]),
        "TICKCAST_KAFKA_BROKER_PORT": str(ports["kafka"]),
        "TICKCAST_KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        "TICKCAST_PROMETHEUS_PORT": str(ports["prometheus"]),
        "TICKCAST_PIPELINE_METRICS_PORT": str(ports["metrics"]),
        "TICKCAST_AIRFLOW_ENABLED": "false",
        # Not part of the quickstart: no Prometheus of the platform's own (the exporter still runs).
        "TICKCAST_PROMETHEUS_URL": f"http://127.0.0.1:{ports['prometheus']}",
    }
    tickcast = [str(REPO / ".venv" / "bin" / "tickcast")]
    try:
        up = subprocess.run([*tickcast, "up"], env=env, cwd=root, capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield root, env, ports, up.stdout + up.stderr
    finally:
        subprocess.run([*tickcast, "down"], env=env, cwd=root, capture_output=True, text=True, timeout=300)


def test_the_quickstart_works_as_written_on_a_fresh_platform(platform) -> None:
    root, env, ports, up_output = platform
    # `up` said where the dashboard's first password is, as the quickstart does.
    assert "dashboard user admin created" in up_output
    script = quickstart()
    for name, readme_port in README_PORTS.items():
        script = script.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{ports[name]}")
    # The demo feed gives S0001 a prediction within a minute; wait for it the way a person would.
    wait = (f"for i in $(seq 1 120); do curl -sf -o /dev/null -H \"X-API-Key: $(cat .wait-key)\" "
            f"http://127.0.0.1:{ports['api']}/api/v1/predictions/S0001 && break; sleep 2; done")
    subprocess.run(
        f"{root}/.venv/bin/tickcast apikey create --name wait --scopes read > .wait-key && {wait}",
        shell=True, env=env, cwd=root, check=True, timeout=300)

    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # 1. the prediction, as JSON, with its freshness; then the batch (curl prints no newline:
    # the two bodies follow each other)
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(out)
    batch, _ = decoder.raw_decode(out, end)
    assert first["symbol"] == "S0001" and first["stale"] is False and "predicted_return" in first
    assert {p["symbol"] for p in batch["predictions"]} == {"S0001", "S0002", "MKT"}
    # 2. the admin's password, which signs in
    password = (root / "var" / "auth" / "dashboard_admin_password").read_text().strip()
    assert password in out
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{ports['dashboard']}") as client:
        signed = client.post("/login", data={"username": "admin", "password": password, "next": "/"})
        assert signed.status_code == 303
        assert client.get("/_dash-layout").status_code == 200
    # 3. the alert, delivered in dry run
    assert "quickstart" in out and "dry run" in out.lower()
    # 4. MLflow answers
    assert "OK" in out
