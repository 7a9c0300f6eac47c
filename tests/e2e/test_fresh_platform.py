"""A fresh platform as `tickcast up` ships it: the README's quickstart runs as written, and the
platform is closed to everyone but its owner (issue 18's acceptance).

One platform per module (`up` takes minutes); the tests only read from it, except the quickstart,
which adds what it says (a key, an alert rule).

The quickstart: the commands between ``<!-- quickstart:begin -->`` and ``<!-- quickstart:end -->`` run in bash
(``set -euo pipefail``) from a directory that looks like the repository to them (``.venv`` is this
checkout's, ``var`` a fresh home), after ``tickcast up`` started every service on free ports. The
README's ports (8000, 8050, 5000) become those ports: the only change made to its text. Airflow and
Prometheus are left out (their own tests cover them); the quickstart only names Airflow's URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.listeners import is_loopback, platform_listeners
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


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    """``tickcast up`` on a fresh home with free ports, from a directory shaped like the repo."""
    root = tmp_path_factory.mktemp("fresh") / "repo"
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


# ---------------------------------------------------------------------------------------------
# Closed by default: what another user of the same host can reach.

PROBE_USER = "tickcast-probe"


def test_every_listener_of_the_platform_is_on_loopback(platform) -> None:
    root, _env, ports, _ = platform
    listening = platform_listeners(root / "var")
    # The platform's services are all found (the API, the dashboard, MLflow, the broker, ...),
    # Spark's driver and block manager and py4j among the rest.
    assert {ports[name] for name in ("api", "dashboard", "mlflow", "kafka", "controller", "metrics")} <= \
        {port for _, port in listening}, listening
    off_loopback = [(address, port) for address, port in listening if not is_loopback(address)]
    assert off_loopback == [], off_loopback


def _probe_user() -> tuple[int, int]:
    import pwd

    if os.geteuid() != 0:
        pytest.skip("creating a second Unix user needs root (CI and the dev machines run as root)")
    try:
        entry = pwd.getpwnam(PROBE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PROBE_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(PROBE_USER)
    assert entry.pw_uid != 0
    return entry.pw_uid, entry.pw_gid


def _as_user(uid: int, gid: int, attempt) -> dict:
    """Run ``attempt()`` in a child that became ``uid`` (no supplementary groups); its JSON result.

    A fork of this process rather than a new interpreter: this one lives under /root, which the
    probe user cannot even traverse, and the child needs nothing but what is already imported."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            payload = json.dumps(attempt()).encode()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            payload = json.dumps({"probe_crashed": f"{type(exc).__name__}: {exc}"}).encode()
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as result:
        data = result.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_a_second_user_on_the_host_is_kept_out(platform) -> None:
    import confluent_kafka
    import httpx

    root, _env, ports, _ = platform
    home = root / "var"
    uid, gid = _probe_user()

    def attempt() -> dict:
        found: dict = {"uid": os.getuid()}
        # 1. the home: tables, stores, MLflow's database, credentials, logs
        for path in (home, home / "mlflow" / "mlflow.db", home / "auth", home / "logs" / "api.log"):
            try:
                if path.is_dir():
                    os.listdir(path)
                else:
                    path.read_bytes()
                found[f"read {path.name}"] = "allowed"
            except PermissionError:
                found[f"read {path.name}"] = "denied"
        # 2. produce to `ticks`: without credentials, and with a guessed password
        delivered = []
        quiet = logging.getLogger("probe.kafka")  # its refusals are the expected outcome, not news
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        for extra in ({}, {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                           "sasl.username": "feed", "sasl.password": "feed"}):
            producer = confluent_kafka.Producer({"bootstrap.servers": f"127.0.0.1:{ports['kafka']}",
                                                 "message.timeout.ms": 8000, "socket.timeout.ms": 3000,
                                                 "logger": quiet, **extra})
            producer.produce("ticks", key=b"S0001", value=b"{}",
                             on_delivery=lambda err, msg: delivered.append(err is None))
            producer.flush(15)
        found["kafka deliveries"] = delivered
        # 3. move MLflow's champion alias through the tracking server
        moved = httpx.post(f"http://127.0.0.1:{ports['mlflow']}/api/2.0/mlflow/registered-models/alias",
                           json={"name": "tickcast-lstm-1d", "alias": "champion", "version": "1"}, timeout=10)
        found["mlflow alias"] = moved.status_code
        # 4. a prediction without signing in (the dashboard) or without a key (the API)
        found["dashboard layout"] = httpx.get(f"http://127.0.0.1:{ports['dashboard']}/_dash-layout",
                                              timeout=10).status_code
        # As a browser asks for it: sent to the sign-in form, with nothing of the page.
        page = httpx.get(f"http://127.0.0.1:{ports['dashboard']}/symbol/S0001", timeout=10,
                         headers={"Accept": "text/html"})
        found["dashboard page"] = (page.status_code, page.headers.get("location"))
        found["api prediction"] = httpx.get(f"http://127.0.0.1:{ports['api']}/api/v1/predictions/S0001",
                                            timeout=10).status_code
        return found

    found = _as_user(uid, gid, attempt)
    assert found == {
        "uid": uid,
        "read var": "denied", "read mlflow.db": "denied", "read auth": "denied", "read api.log": "denied",
        "kafka deliveries": [False, False],
        "mlflow alias": 401,
        "dashboard layout": 401, "dashboard page": [303, "/login?next=%2Fsymbol%2FS0001"],
        "api prediction": 401,
    }
    # The owner still reads it all, and every file it wrote is its own only.
    loose = []
    for parent, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            try:
                mode = os.lstat(os.path.join(parent, name)).st_mode
            except FileNotFoundError:  # a running service replaced it meanwhile
                continue
            # Read or write for anyone else; Spark marks the jars it copies executable (0711), which
            # grants nothing inside a 0700 home.
            if not stat.S_ISLNK(mode) and mode & 0o066:
                loose.append(f"{oct(mode & 0o777)} {os.path.join(parent, name)}")
    assert oct(home.stat().st_mode & 0o777) == "0o700" and loose == []
