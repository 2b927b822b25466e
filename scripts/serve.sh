#!/usr/bin/env bash
# Install quoteflow and start the quote server on its default market (dashboard at the printed URL).
#   bash scripts/serve.sh                 # http://127.0.0.1:8080/
#   bash scripts/serve.sh --port 9000     # extra args go to `quoteflow serve`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --disable-pip-version-check -q -e .
exec "$PY" -m quoteflow serve "$@"
