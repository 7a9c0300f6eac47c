"""Resolve the JVM jars with Maven (poms under ``infra/maven``) into the jar cache.

Spark's extra jars are filtered against the jars pyspark already ships, so two
versions of one library never share a classpath.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tickcast.core.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

MAVEN_DIR = REPO_ROOT / "infra" / "maven"
_VERSION_SUFFIX = re.compile(r"-[0-9][0-9A-Za-z._-]*\.jar$")


def artifact_id(jar_name: str) -> str:
    return _VERSION_SUFFIX.sub("", jar_name)


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _copy_dependencies(pom: Path, out: Path) -> None:
    cmd = [
        "mvn", "-B", "-q", "-s", str(MAVEN_DIR / "settings.xml"), "-f", str(pom),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        "-DexcludeGroupIds=org.scala-lang", f"-DoutputDirectory={out}",
    ]
    if pom.parent.name == "broker":
        cmd.remove("-DexcludeGroupIds=org.scala-lang")  # the broker needs its own Scala
    log.info("resolving %s with Maven", pom.relative_to(REPO_ROOT))
    subprocess.run(cmd, check=True)


def _stamp(pom: Path) -> str:
    return pom.read_text()


def ensure_jars(settings: Settings, force: bool = False) -> dict[str, Path]:
    """Fetch broker and Spark jars unless the cache already matches the poms."""
    results = {}
    for kind, target in (("broker", settings.broker_jars_dir), ("spark", settings.spark_jars_dir)):
        pom = MAVEN_DIR / kind / "pom.xml"
        stamp_file = target / ".pom"
        if not force and stamp_file.exists() and stamp_file.read_text() == _stamp(pom):
            results[kind] = target
            continue
        with tempfile.TemporaryDirectory(dir=target.parent if target.parent.exists() else None) as tmp:
            staging = Path(tmp) / kind
            _copy_dependencies(pom, staging)
            if kind == "spark":
                shipped = {artifact_id(j.name) for j in pyspark_jars_dir().glob("*.jar")}
                for jar in staging.glob("*.jar"):
                    if artifact_id(jar.name) in shipped:
                        jar.unlink()
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), target)
        stamp_file.write_text(_stamp(pom))
        results[kind] = target
        log.info("%s jars ready in %s", kind, target)
    return results
