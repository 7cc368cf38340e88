#!/usr/bin/env bash
# Install the package and its dependencies. torch goes first, pinned, so pip keeps the CPU build.
# Then the llamacpp engine (GGUF files and Ollama models as llama.cpp runs them), which compiles
# llama.cpp (a few minutes; cmake and a C++ compiler): where it cannot be built, GGUF files run on
# the PyTorch engine and the install says why. REQUIRE_LLAMACPP=1 makes that a failure (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"; }
pip_install "torch==2.13.0"
pip_install -e ".[test]"
if ! "$PYTHON" -c "import llama_cpp" 2>/dev/null; then
  # LLAVA_BUILD=OFF: the multimodal library is not used, and skipping it halves the build
  if ! CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" pip_install -e ".[llamacpp]"; then
    if [[ "${REQUIRE_LLAMACPP:-0}" == 1 ]]; then exit 1; fi
    echo "note: llama-cpp-python could not be built here (it needs cmake and a C++ compiler); GGUF files" \
         "run on the PyTorch engine. Install it later with: pip install -e '.[llamacpp]'" >&2
  fi
fi
