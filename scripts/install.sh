#!/usr/bin/env bash
# Installs Bastion into ./.venv: the Debian dataset package (when apt is available and we are root) and the Python
# package with torch pinned to the local CPU build (constraints.txt). Extra pip arguments pass through, e.g. '.[test]'.
# --no-compile: byte-compiling every installed package took about 40 s of a fresh install; Python compiles on import.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    || echo "warning: could not install dataset-fashion-mnist (Fashion-MNIST features will ask for it)" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -c constraints.txt -e "${1:-.}" 2>&1 \
  | { grep -v '^WARNING: Location' || true; }
