#!/usr/bin/env bash
# Installs Bastion with its test tools and runs the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh '.[test]'
exec .venv/bin/python -m pytest -q "$@"
