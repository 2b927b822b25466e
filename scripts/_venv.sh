# The project virtual environment, shared by scripts/serve.sh and scripts/test.sh (sourced).
#
#   source scripts/_venv.sh
#   quoteflow_env "dev"      # or "" for the package alone; sets VENV_PY (its python)
#
# - An active virtual environment ($VIRTUAL_ENV) is used as it is; otherwise the project's
#   own .venv/ (or $QUOTEFLOW_VENV) is created, so a system Python marked externally managed
#   (PEP 668, e.g. Debian's /usr/bin/python3) is never pip-installed into.
# - The Python is $PYTHON, else the first of python3.13, python3.12, python3.11, python3
#   on PATH, checked against pyproject's requires-python.
# - The install is skipped while a stamp (hash of pyproject.toml, the extras, the Python
#   version) says the environment is up to date.

QF_MIN_PY="3.11"  # pyproject.toml requires-python; tests/unit/test_scripts.py keeps them equal

qf_say() { echo ">> $*" >&2; }
qf_die() { echo "error: $*" >&2; exit 1; }

# Version of interpreter $1 as "3.11", or nothing if it does not run.
qf_py_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

# True when version $1 >= QF_MIN_PY.
qf_new_enough() {
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$QF_MIN_PY" "$1" | sort -V | head -n1)" = "$QF_MIN_PY" ]
}

# The Python to build the venv with: $PYTHON, or the first new enough of the usual names.
qf_find_python() {
  local cand ver seen=""
  if [ -n "${PYTHON:-}" ]; then
    ver=$(qf_py_version "$PYTHON")
    [ -n "$ver" ] || qf_die "PYTHON=$PYTHON does not run"
    qf_new_enough "$ver" || qf_die "PYTHON=$PYTHON is Python $ver; quoteflow needs Python >= $QF_MIN_PY"
    echo "$PYTHON"
    return
  fi
  for cand in python3.13 python3.12 python3.11 python3; do
    command -v "$cand" >/dev/null 2>&1 || continue
    ver=$(qf_py_version "$cand")
    if qf_new_enough "$ver"; then
      command -v "$cand"
      return
    fi
    seen="$seen $cand ($ver)"
  done
  qf_die "quoteflow needs Python >= $QF_MIN_PY; found:${seen:- no python3 on PATH}. Install one (e.g. apt-get install python3.11) or set PYTHON=/path/to/python3.11"
}

# Make sure "$1 -m venv" can work: Debian splits ensurepip into python3.X-venv.
qf_ensure_venv_module() {
  local py=$1 ver
  "$py" -c 'import ensurepip, venv' 2>/dev/null && return
  ver=$(qf_py_version "$py")
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    qf_say "installing python$ver-venv with apt (Python's venv module, Debian packages it apart; may take a minute)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$ver-venv" >/dev/null
  else
    qf_die "$py cannot create virtual environments (no ensurepip): run 'sudo apt-get install python$ver-venv', or set PYTHON to another Python >= $QF_MIN_PY"
  fi
}

# quoteflow_env EXTRAS: an up-to-date environment with quoteflow[EXTRAS] installed
# (editable). Sets VENV_DIR and VENV_PY, and puts the environment's bin/ first on PATH.
quoteflow_env() {
  local extras=$1 spec=. py ver stamp want
  if [ -n "${VIRTUAL_ENV:-}" ]; then
    VENV_DIR=$VIRTUAL_ENV
    py="$VENV_DIR/bin/python"
    [ -x "$py" ] || qf_die "VIRTUAL_ENV=$VIRTUAL_ENV has no bin/python; deactivate it or fix it"
    ver=$(qf_py_version "$py")
    qf_new_enough "$ver" || qf_die "the active virtual environment is Python $ver; quoteflow needs Python >= $QF_MIN_PY"
  else
    VENV_DIR=${QUOTEFLOW_VENV:-$PWD/.venv}
    py="$VENV_DIR/bin/python"
    # A half-made environment (interrupted first run: no install stamp yet, no pip) is
    # made again. With a stamp the install finished; skip the ~1 s pip probe.
    if [ -d "$VENV_DIR" ] && ! ls "$VENV_DIR"/.quoteflow-installed-* >/dev/null 2>&1 \
      && ! "$py" -m pip --version >/dev/null 2>&1; then
      qf_say "$VENV_DIR is incomplete: making it again"
      rm -rf "$VENV_DIR"
    fi
    if [ ! -d "$VENV_DIR" ]; then
      local base
      base=$(qf_find_python)
      qf_ensure_venv_module "$base"
      qf_say "creating the virtual environment $VENV_DIR with $base (Python $(qf_py_version "$base"))"
      "$base" -m venv "$VENV_DIR" || qf_die "could not create $VENV_DIR with $base"
    fi
    ver=$(qf_py_version "$py")
    qf_new_enough "$ver" || qf_die "$VENV_DIR is Python $ver; quoteflow needs >= $QF_MIN_PY: remove it and run again"
  fi
  export PATH="$VENV_DIR/bin:$PATH"
  VENV_PY=$py

  [ -n "$extras" ] && spec=".[$extras]"
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) python$ver"
  stamp="$VENV_DIR/.quoteflow-installed-${extras:-base}"
  # The dev extras contain every other one: a dev install serves serve.sh too.
  for s in "$stamp" "$VENV_DIR/.quoteflow-installed-dev"; do
    if [ -f "$s" ] && [ "$(cat "$s")" = "$want $PWD" ]; then
      return
    fi
  done
  if [ -e "$VENV_DIR/.quoteflow-installed-${extras:-base}" ]; then
    qf_say "pyproject.toml changed: updating quoteflow$([ -n "$extras" ] && echo "[$extras]") in $VENV_DIR..."
  else
    qf_say "installing quoteflow$([ -n "$extras" ] && echo "[$extras]") into $VENV_DIR (first run, ~1 min$([ -n "$extras" ] && echo "; the test extras are larger: a few minutes"))..."
  fi
  # pip's "Collecting ..." lines are the progress; errors go to stderr as they are.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$py" -m pip install --disable-pip-version-check \
    --progress-bar off -e "$spec" | sed -un 's/^\(Collecting\|Successfully installed\) /   \1 /p'
  echo "$want $PWD" >"$stamp"
  qf_say "quoteflow installed in $VENV_DIR"
}
