#!/usr/bin/env bash
# One command on a fresh machine: install Entente in .venv, create the SQLite database (./entente.db),
# a demo partner "acme" (domain acme.test) with a SCIM token printed below, and serve on :8000.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/entente demo "$@"
