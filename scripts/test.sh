#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, types, all tests.
#   bash scripts/test.sh            # whole suite (what CI runs)
#   bash scripts/test.sh -m "not slow" tests/unit   # extra args go to pytest
# As root it installs the system packages (chromium, redis-server, nginx, golang) with apt;
# otherwise it says exactly which are missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SYSTEM_PKGS=(chromium redis-server nginx golang-go golang-github-gin-gonic-gin-dev nodejs npm)
need_cmd() { command -v "$1" >/dev/null 2>&1; }

missing=()
need_cmd chromium || missing+=(chromium)
need_cmd redis-server || missing+=(redis-server)
need_cmd nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx)
need_cmd go || missing+=(golang-go)
need_cmd node || missing+=(nodejs)  # tests/interop: npm eventsource
need_cmd npm || missing+=(npm)
[ -d /usr/share/gocode/src/github.com/gin-gonic/gin ] || missing+=(golang-github-gin-gonic-gin-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    echo ">> installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

echo ">> installing quoteflow with its test and dev extras"
"$PY" -m pip install --disable-pip-version-check -q -e '.[dev]'

echo ">> ruff"
"$PY" -m ruff check quoteflow tests benchmarks
echo ">> mypy"
"$PY" -m mypy
echo ">> pytest"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec "$PY" -m pytest "$@"
