#!/usr/bin/env bash
# Bring a machine (Debian 12, Python 3.11 as python3, Java 17, Maven) to the point where
# `.venv/bin/tickcast` runs: Debian packages, uv, the locked Python environment, JVM jars.
# Idempotent: every step checks first and is quick when there is nothing to do.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# Debian packages: chromium + chromium-driver for the browser tests, redis-server and postgresql
# for the cluster profile (run by `tickcast up` itself, like prometheus), prometheus for the metrics over time (`tickcast up` runs
# /usr/bin/prometheus itself, on loopback; the package's own service is not used).
packages=(chromium chromium-driver redis-server prometheus postgresql)
missing=()
for pkg in "${packages[@]}"; do
    # dpkg -s also succeeds for removed packages whose config files remain.
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${missing[*]}"
        SUDO=sudo
    else
        SUDO=
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
    say "Debian packages present: ${packages[*]}"
fi

# Java and Maven are part of this machine kind; say clearly if they are not.
command -v java >/dev/null || die "java not found: install a Java 17 JDK (e.g. apt-get install openjdk-17-jdk-headless)"
command -v mvn >/dev/null || die "mvn not found: install Maven (e.g. apt-get install maven)"
java_major=$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n1)
[[ -n "$java_major" && "$java_major" -ge 17 ]] || die "Java 17 or newer needed, found: $(java -version 2>&1 | head -n1)"
maven_version=$(mvn -B -v 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | head -n1 | cut -d' ' -f1-3)
say "java $java_major and $maven_version present"

# uv, which creates .venv from uv.lock.
if command -v uv >/dev/null; then
    UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
    UV=(python3 -m uv)
else
    say "installing uv (pip)"
    python3 -m pip install --quiet uv \
        || python3 -m pip install --quiet --break-system-packages uv \
        || die "could not install uv with python3 -m pip"
    UV=(python3 -m uv)
fi

say "syncing the Python environment (.venv) from uv.lock"
# Only PyPI is reachable: use the machine's Python 3.11 rather than downloading one.
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
"${UV[@]}" sync --frozen

# Airflow in an environment of its own (it pins fastapi below what the API uses); its DAG tasks
# run in .venv.
say "syncing Airflow's environment (airflow/.venv) from airflow/uv.lock"
"${UV[@]}" sync --frozen --project airflow

# The scripts, styles and fonts of the GX data docs (tickcast/quality/docs_assets.py), from npm
# at the versions GX's templates name, so the docs work without internet. Pinned by
# infra/datadocs/package-lock.json; npm ci keeps what it downloads in npm's cache; skipped while
# node_modules was installed from this very lock file.
datadocs=infra/datadocs
if cmp -s "$datadocs/package-lock.json" "$datadocs/node_modules/.installed-from-lock"; then
    say "data docs assets present ($datadocs/node_modules)"
else
    if ! command -v npm >/dev/null; then
        say "installing Debian packages: nodejs npm"
        as_root=()
        [[ $EUID -ne 0 ]] && as_root=(sudo)
        { "${as_root[@]}" apt-get update \
            && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; } \
            || die "npm not found and could not be installed: install Node.js with npm"
    fi
    say "installing the data docs assets ($datadocs, npm ci)"
    npm ci --prefix "$datadocs" --no-audit --no-fund
    cp "$datadocs/package-lock.json" "$datadocs/node_modules/.installed-from-lock"
fi

say "tickcast setup (JVM jars, \$TICKCAST_HOME)"
.venv/bin/tickcast setup
