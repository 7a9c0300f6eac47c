"""The architecture as checks that can fail (docs/architecture.md says what each layer may import).

The import contracts live in pyproject.toml ([tool.importlinter]) and the type checking in
[tool.mypy]; `make test` runs both before the tests, and these tests show that each one does
fail when the rule is broken, on a copy of the project with one violation planted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tickcast.core.settings import REPO_ROOT

BIN = Path(sys.executable).parent
PACKAGES = ("tickcast", "spark_jobs", "serving", "dashboard", "feature_repo")
# Packages of pure domain code and the catalog: importing them must not start the heavy engines.
DOMAIN = ("tickcast.core", "tickcast.catalog", "tickcast.features", "tickcast.models", "tickcast.scoring",
          "tickcast.quality", "tickcast.feeds", "tickcast.auth", "tickcast.alerts")
HEAVY = ("pyspark", "delta", "great_expectations", "feast", "tensorflow", "mlflow")


def _copy_project(root: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml",):
        shutil.copy(REPO_ROOT / name, root / name)
    return root


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # The copy comes first on the path, ahead of the installed (editable) project.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_import_contracts_hold() -> None:
    done = _run([str(BIN / "lint-imports")], REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_core_module_importing_the_api_breaks_the_contracts(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    planted = project / "tickcast" / "core" / "intervals.py"
    planted.write_text(planted.read_text() + "\nimport serving.app  # noqa: E402,F401 - the violation\n")
    done = _run([str(BIN / "lint-imports")], project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tickcast.core.intervals -> serving.app" in done.stdout
    assert "Core and catalog import no job, API or dashboard BROKEN" in done.stdout


def test_a_domain_service_importing_a_web_framework_breaks_the_contracts(tmp_path: Path) -> None:
    """The live predictions are the API's and the dashboard's: no WebSocket type in them."""
    project = _copy_project(tmp_path)
    planted = project / "tickcast" / "scoring" / "live_predictions.py"
    planted.write_text(planted.read_text() + "\nfrom starlette.websockets import WebSocket  # noqa: E402,F401\n")
    done = _run([str(BIN / "lint-imports")], project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tickcast.scoring.live_predictions -> starlette" in done.stdout
    assert "The services of the domain import no web framework BROKEN" in done.stdout


@pytest.mark.parametrize(("module", "planted_import"), [
    ("core/intervals.py", "from tickcast.core import settings  # noqa: E402,F401\n"),
    # A cycle hidden inside a function (how gate <-> docs once hid) is seen all the same.
    ("quality/docs.py", "def _hidden():\n    from tickcast.quality import gate  # noqa: F401\n"),
], ids=["module-level", "function-local"])
def test_an_import_cycle_breaks_the_contracts(tmp_path: Path, module: str, planted_import: str) -> None:
    project = _copy_project(tmp_path)
    planted = project / "tickcast" / module
    planted.write_text(planted.read_text() + "\n" + planted_import)
    done = _run([str(BIN / "lint-imports")], project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No import cycles between sibling modules or packages BROKEN" in done.stdout


def test_domain_packages_import_no_engine() -> None:
    """Spark, Delta, GX, Feast, TensorFlow and MLflow are imported where they are used, inside
    functions: importing any domain module (a CLI's --help, the API, a test) stays light."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {DOMAIN!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        importlib.import_module(info.name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_type_error_in_the_core_fails_the_type_check(tmp_path: Path) -> None:
    """mypy with the project's configuration, on a copy of the core with one wrong annotation."""
    shutil.copytree(REPO_ROOT / "tickcast" / "core", tmp_path / "tickcast" / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tickcast" / "__init__.py").write_text("")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    command = [str(BIN / "mypy"), "--no-incremental", "tickcast/core"]
    planted = tmp_path / "tickcast" / "core" / "intervals.py"
    planted.write_text(planted.read_text() + "\n\nWRONG: int = INTERVALS['1d'].name\n")
    done = _run(command, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    # The one error is the planted one (`make lint` checks the real core is clean).
    assert "Found 1 error in 1 file" in done.stdout and "intervals.py:" in done.stdout
    assert "Incompatible types in assignment" in done.stdout
