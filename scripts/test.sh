#!/usr/bin/env bash
# The test suite: real Spark in local mode, real forward passes on a tiny StarCoder2 model.
#   bash scripts/test.sh          the unit and spark tiers (minutes)
#   bash scripts/test.sh --all    every tier, the end-to-end tests marked slow included (CI)
#   bash scripts/test.sh --unit   the unit tier alone (no JVM)
# Any other arguments go to pytest (e.g. -x, -k name, --durations=25).
set -euo pipefail
cd "$(dirname "$0")/.."
tier=(-m "not slow")
args=()
for arg in "$@"; do
  case "$arg" in
    --all) tier=() ;;
    --unit) tier=(-m "not slow and not spark") ;;
    *) args+=("$arg") ;;
  esac
done
exec "${PYTHON:-python3}" -m pytest -q tests ${tier[@]+"${tier[@]}"} ${args[@]+"${args[@]}"}
