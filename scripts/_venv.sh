# Sourced by scripts/serve and scripts/test: create the virtual environment once with a
# supported Python (vowpal-wabbit-next ships wheels for 3.10-3.12 only) and install the
# project with the extras named in $1 whenever pyproject.toml changes.
pick_python() {
  for candidate in "${PYTHON:-}" python3.12 python3.11 python3.10 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "routebandit needs Python 3.10, 3.11 or 3.12 (vowpal-wabbit-next has wheels for those only)." >&2
  echo "Install one (e.g. 'apt-get install python3.11-venv' or pyenv) or set PYTHON=/path/to/python3.x" >&2
  return 1
}

ensure_venv() {
  local extras=$1
  VENV=${VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python=$(pick_python)
    "$python" -m venv "$VENV"
  fi
  local stamp="$VENV/.routebandit-deps-${extras:-base}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
}
