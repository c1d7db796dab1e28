#!/usr/bin/env bash
# Quick start: install everything into .venv, then run the main job on the embedded default
# (Prefect with its SQLite database, evidence in var/evidence).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh
exec .venv/bin/irp stack "$@"
