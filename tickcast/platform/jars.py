"""Resolve the JVM jars with Maven (poms under ``infra/maven``) into the jar cache.

Spark's extra jars are filtered against the jars pyspark already ships, so two
versions of one library never share a classpath.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from tickcast.core.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

MAVEN_DIR = REPO_ROOT / "infra" / "maven"
# Our own Spark operators (Java), compiled against the jars of the installed pyspark.
JVM_SOURCES = REPO_ROOT / "spark_jobs" / "jvm"
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
    """Fetch the broker's, Spark's and the JMX exporter agent's jars unless the cache already
    matches the poms."""
    results = {}
    from tickcast.platform import jmx

    for kind, target in (("broker", settings.broker_jars_dir), ("spark", settings.spark_jars_dir),
                         ("jmx-agent", jmx.agent_dir(settings))):
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


def extensions_jar(settings: Settings) -> Path:
    """The jar of ``spark_jobs/jvm``, compiled with javac against the installed pyspark's jars
    (no download: the classes it extends ship in the wheel) unless a jar of the same sources
    and pyspark version is already built."""
    import pyspark

    sources = sorted(JVM_SOURCES.rglob("*.java"))
    digest = hashlib.sha256(pyspark.__version__.encode())
    for source in sources:
        digest.update(source.relative_to(JVM_SOURCES).as_posix().encode() + b"\0" + source.read_bytes())
    jar = settings.jars_dir / "tickcast" / f"tickcast-spark-{digest.hexdigest()[:16]}.jar"
    if jar.exists():
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jar.parent) as tmp:
        classes = Path(tmp) / "classes"
        log.info("compiling %d Java sources of %s", len(sources), JVM_SOURCES.relative_to(REPO_ROOT))
        subprocess.run(
            ["javac", "-nowarn", "--release", "17", "-d", str(classes), "-cp", str(pyspark_jars_dir() / "*"),
             *map(str, sources)],
            check=True, capture_output=True, text=True,
        )
        staged = Path(tmp) / jar.name
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(classes.rglob("*.class")):
                archive.write(path, path.relative_to(classes).as_posix())
        # Two processes building at once both finish with a complete jar under the same name.
        staged.replace(jar)
    for stale in jar.parent.glob("tickcast-spark-*.jar"):
        if stale != jar:
            stale.unlink(missing_ok=True)
    return jar
