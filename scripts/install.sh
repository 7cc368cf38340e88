#!/usr/bin/env bash
# Install the package and its dependencies. torch goes first, pinned, so pip keeps the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "torch==2.13.0"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[test]"
