#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, types, all tests.
#   bash scripts/test.sh            # whole suite (what CI runs)
#   bash scripts/test.sh -m "not slow" tests/unit   # extra args go to pytest
# As root it installs the system packages (chromium, redis-server, nginx, golang,
# prometheus) with apt; otherwise it says exactly which are missing and stops.
# Python: an active virtual environment, else the project's .venv/ (see scripts/_venv.sh),
# with quoteflow[dev] installed once and again only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh

need_cmd() { command -v "$1" >/dev/null 2>&1; }

missing=()
need_cmd chromium || missing+=(chromium)
need_cmd redis-server || missing+=(redis-server)
need_cmd nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx)
need_cmd go || missing+=(golang-go)
need_cmd node || missing+=(nodejs)  # tests/interop: npm eventsource
need_cmd npm || missing+=(npm)
[ -d /usr/share/gocode/src/github.com/gin-gonic/gin ] || missing+=(golang-github-gin-gonic-gin-dev)
{ need_cmd prometheus && need_cmd promtool; } || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    echo ">> installing system packages with apt (may take a few minutes): ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    echo ">> system packages installed"
  else
    echo "missing system packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# Playwright drives Debian's /usr/bin/chromium: never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
quoteflow_env dev

echo ">> ruff"
"$VENV_PY" -m ruff check quoteflow tests benchmarks
echo ">> mypy"
"$VENV_PY" -m mypy
echo ">> pytest"
exec "$VENV_PY" -m pytest "$@"
