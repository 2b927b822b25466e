#!/usr/bin/env bash
# Install quoteflow into the project's .venv/ (first run, or after pyproject.toml changed)
# and start the quote server on its default market (dashboard at the printed URL).
#   bash scripts/serve.sh                 # http://127.0.0.1:8080/
#   bash scripts/serve.sh --port 9000     # extra args go to `quoteflow serve`
# Python: an active virtual environment, else .venv/ made with $PYTHON or the first of
# python3.13, python3.12, python3.11, python3 (>= 3.11). See scripts/_venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
quoteflow_env ""
exec "$VENV_PY" -m quoteflow serve "$@"
