#!/usr/bin/env bash
# Installs Bastion with its test tools and runs the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh '.[test]'
bash scripts/services.sh  # PostgreSQL and Redis on loopback, started (or installed) when missing
# Two workers (the machines have two cores; each test keeps torch at one thread): 144 s -> 97 s on a warm venv.
exec .venv/bin/python -m pytest -q -n "${BASTION_TEST_WORKERS:-2}" "$@"
