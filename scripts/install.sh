#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install irp with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "irp needs Python 3.11 or newer; found: $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "installed: $(.venv/bin/irp --version 2>/dev/null || echo irp) in .venv"
