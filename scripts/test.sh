#!/usr/bin/env bash
# The test suite: real Spark in local mode, real forward passes on a tiny StarCoder2 model.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m pytest -q tests "$@"
